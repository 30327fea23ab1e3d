#pragma once
// Unicode helpers for the BERT tokenizer, on top of utf8proc's character database.
//
// Every predicate here is defined the way BERT's tokenization.py defines it with
// Python's unicodedata, so that the tokenizer built on them gives the same tokens, and
// reads the general categories of the database `UnicodeData` names: Unicode 9.0, that of
// the original pipeline's Python 3.6 (unicode_9_0.hpp, generated), or utf8proc's own:
//   is_control      tab, newline and carriage return never (they are whitespace); else,
//                   under ControlCategories::all_c (the original pipeline's tokenization.py
//                   and Hugging Face's), every category starting with "C" -- Cc, Cf, Co
//                   (private use), Cn (unassigned), Cs (surrogates, which well-formed UTF-8
//                   cannot hold) -- and under ControlCategories::cc_cf (Google's first BERT
//                   release) only Cc and Cf
//   is_whitespace   space, tab, newline, carriage return, or category Zs
//   is_punctuation  ASCII 33-47, 58-64, 91-96, 123-126, or a P* category
//   is_cjk          the CJK ideograph blocks of _is_chinese_char
//   is_python_space what Python's str.split() splits on (bidi class WS/B/S or Zs)
// plus Python's full lower-casing (str.lower(), including the final-sigma rule) and NFD.

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/text/unicode_9_0.hpp"

namespace ctdl::text {

using codepoint = char32_t;

// ---- UTF-8 -------------------------------------------------------------------------

/// Decodes one code point at s[pos]; returns its length in bytes, or 0 when the bytes
/// there are not well-formed UTF-8 (overlong forms, surrogates and values above
/// U+10FFFF are rejected, as Python's decoder rejects them).
inline std::size_t decode_one(std::string_view s, std::size_t pos, codepoint& cp) {
  const auto byte = static_cast<unsigned char>(s[pos]);
  if (byte < 0x80) {
    cp = byte;
    return 1;
  }
  utf8proc_int32_t value = 0;
  const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + pos),
                                  static_cast<utf8proc_ssize_t>(s.size() - pos), &value);
  if (n <= 0) return 0;
  cp = static_cast<codepoint>(value);
  return static_cast<std::size_t>(n);
}

/// The byte offset of the first ill-formed UTF-8 sequence in s, or nullopt when s is valid.
inline std::optional<std::size_t> find_invalid_utf8(std::string_view s) {
  std::size_t pos = 0;
  codepoint cp;
  while (pos < s.size()) {
    // Skip ASCII eight bytes at a time.
    while (pos + 8 <= s.size()) {
      std::uint64_t word;
      std::copy_n(s.data() + pos, 8, reinterpret_cast<char*>(&word));
      if (word & 0x8080808080808080ull) break;
      pos += 8;
    }
    if (pos >= s.size()) break;
    const auto n = decode_one(s, pos, cp);
    if (n == 0) return pos;
    pos += n;
  }
  return std::nullopt;
}

/// Appends the UTF-8 encoding of cp to out.
inline void append_utf8(std::string& out, codepoint cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
    return;
  }
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
}

/// Decodes valid UTF-8 (check with find_invalid_utf8 first) into code points.
inline std::u32string to_utf32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  codepoint cp;
  for (std::size_t pos = 0; pos < s.size();) {
    const auto n = decode_one(s, pos, cp);
    if (n == 0) throw Error("to_utf32: invalid UTF-8 at byte " + std::to_string(pos));
    out.push_back(cp);
    pos += n;
  }
  return out;
}

inline std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (auto cp : s) append_utf8(out, cp);
  return out;
}

/// Number of code points in valid UTF-8 (every byte that is not a continuation byte).
inline std::size_t count_codepoints(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// ---- character classes ---------------------------------------------------------------

/// The character database that says which general category a code point has.
enum class UnicodeData : std::uint8_t {
  /// Unicode 9.0: the original pipeline's Python 3.6 (NVIDIA's TensorFlow 1 containers),
  /// whose tokenization.py dropped every character assigned since as unassigned (Cn).
  v9_0 = 1,
  /// utf8proc's (Unicode 15.0 in utf8proc 2.8): what a current Python roughly sees.
  utf8proc = 2,
};

namespace detail {

/// Unicode 9.0's categories as a two-stage table, built from the runs on first use (as
/// CPython's own tables are laid out): the block of 256 code points cp lies in, then cp's
/// place in that block; identical blocks are stored once (133 blocks, 34 KB).
class Unicode9Table {
 public:
  Unicode9Table() {
    const auto& runs = unicode_9_0::category_runs;
    std::size_t run = 0;
    std::array<std::uint8_t, 256> block{};
    for (codepoint first = 0; first < 0x110000; first += 256) {
      for (codepoint i = 0; i < 256; ++i) {
        while (run + 1 < std::size(runs) && runs[run + 1].first <= first + i) ++run;
        block[i] = runs[run].category;
      }
      std::size_t index = 0;
      while (index < blocks_.size() && blocks_[index] != block) ++index;
      if (index == blocks_.size()) blocks_.push_back(block);
      stage1_.push_back(static_cast<std::uint16_t>(index));
    }
  }
  std::uint8_t operator()(codepoint cp) const { return blocks_[stage1_[cp >> 8]][cp & 0xFF]; }

 private:
  std::vector<std::uint16_t> stage1_;
  std::vector<std::array<std::uint8_t, 256>> blocks_;
};

}  // namespace detail

/// The general category of cp in the database `db` (Cn above U+10FFFF).
inline utf8proc_category_t category(codepoint cp, UnicodeData db) {
  if (db == UnicodeData::utf8proc) return utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  static const detail::Unicode9Table table;
  return cp < 0x110000 ? static_cast<utf8proc_category_t>(table(cp)) : UTF8PROC_CATEGORY_CN;
}

inline bool is_category_p(utf8proc_category_t c) {
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

/// Which Unicode categories tokenization.py's _is_control counts as control characters.
enum class ControlCategories : std::uint8_t {
  all_c = 1,  ///< `cat.startswith("C")`: Cc Cf Co Cn Cs (the original pipeline; Hugging Face)
  cc_cf = 2,  ///< `cat in ("Cc", "Cf")` (Google's first BERT release)
};

/// tokenization.py's _is_control: tab, newline and carriage return are not control (both
/// releases count them as whitespace); otherwise the categories `which` names, in `db`
/// (what is unassigned, Cn, depends on the Unicode version).
inline bool is_control(codepoint cp, ControlCategories which, UnicodeData db) {
  if (cp == U'\t' || cp == U'\n' || cp == U'\r') return false;
  const auto c = category(cp, db);
  if (c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF) return true;
  return which == ControlCategories::all_c &&
         (c == UTF8PROC_CATEGORY_CO || c == UTF8PROC_CATEGORY_CN || c == UTF8PROC_CATEGORY_CS);
}

/// tokenization.py's _is_whitespace: space, tab, newline, carriage return, or category Zs.
inline bool is_whitespace(codepoint cp, UnicodeData db) {
  if (cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r') return true;
  return category(cp, db) == UTF8PROC_CATEGORY_ZS;
}

/// tokenization.py's _is_punctuation: the ASCII non-letter, non-digit printable ranges
/// (so "$", "^" and "`" count although Unicode calls them symbols), or a P* category.
inline bool is_punctuation(codepoint cp, UnicodeData db) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126))
    return true;
  return is_category_p(category(cp, db));
}

/// tokenization.py's _is_chinese_char: the CJK Unified Ideographs blocks and extensions
/// A-E plus the compatibility ideographs (not Hiragana, Katakana or Hangul).
inline bool is_cjk(codepoint cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/// Python's str.isspace(), which str.split() uses: bidirectional class WS, B or S, or
/// category Zs. Listed explicitly (it is a short, stable set).
inline bool is_python_space(codepoint cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D:
    case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x20:
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

// ---- Python's str.lower() ------------------------------------------------------------

namespace detail {
/// Whether cp holds a property given as the code points where it starts or stops holding.
template <std::size_t N>
bool toggled_on(const char32_t (&toggles)[N], codepoint cp) {
  return (std::upper_bound(std::begin(toggles), std::end(toggles), cp) - std::begin(toggles)) % 2 == 1;
}
}  // namespace detail

/// Unicode's Cased property: Lu, Ll, Lt, or Other_Lowercase / Other_Uppercase; under
/// UnicodeData::v9_0, 9.0's (Python 3.6's flags).
inline bool is_cased(codepoint cp, UnicodeData db) {
  if (db == UnicodeData::v9_0) return detail::toggled_on(unicode_9_0::cased_toggles, cp);
  const auto c = category(cp, db);
  if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT)
    return true;
  // Other_Lowercase and Other_Uppercase (PropList.txt, Unicode 14).
  static constexpr std::pair<codepoint, codepoint> other[] = {
      {0x00AA, 0x00AA}, {0x00BA, 0x00BA}, {0x02B0, 0x02B8}, {0x02C0, 0x02C1},
      {0x02E0, 0x02E4}, {0x0345, 0x0345}, {0x037A, 0x037A}, {0x10FC, 0x10FC},
      {0x1D2C, 0x1D6A}, {0x1D78, 0x1D78}, {0x1D9B, 0x1DBF}, {0x2071, 0x2071},
      {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2160, 0x217F}, {0x24B6, 0x24E9},
      {0x2C7C, 0x2C7D}, {0xA69C, 0xA69D}, {0xA770, 0xA770}, {0xA7F2, 0xA7F4},
      {0xA7F8, 0xA7F9}, {0xAB5C, 0xAB5F}, {0xAB69, 0xAB69}, {0x10780, 0x10780},
      {0x10783, 0x10785}, {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x1F130, 0x1F149},
      {0x1F150, 0x1F169}, {0x1F170, 0x1F189}};
  for (auto [lo, hi] : other)
    if (cp >= lo && cp <= hi) return true;
  return false;
}

/// Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk, or Word_Break MidLetter,
/// MidNumLet or Single_Quote; under UnicodeData::v9_0, 9.0's (Python 3.6's flags).
inline bool is_case_ignorable(codepoint cp, UnicodeData db) {
  if (db == UnicodeData::v9_0) return detail::toggled_on(unicode_9_0::case_ignorable_toggles, cp);
  const auto c = category(cp, db);
  if (c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_CF ||
      c == UTF8PROC_CATEGORY_LM || c == UTF8PROC_CATEGORY_SK)
    return true;
  switch (cp) {
    case 0x0027: case 0x002E: case 0x003A: case 0x00B7: case 0x0387: case 0x055F:
    case 0x05F4: case 0x2018: case 0x2019: case 0x2024: case 0x2027: case 0xFE13:
    case 0xFE52: case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
      return true;
    default:
      return false;
  }
}

/// Appends Python's s.lower() to out: the full lower-case mapping (U+0130 becomes
/// "i" + U+0307) and capital sigma as final sigma (U+03C2) when it ends a word
/// (Unicode's Final_Sigma condition, which Python applies, with the Cased and
/// Case_Ignorable properties of `db`). The mappings are utf8proc's: for every character
/// assigned in Unicode 9.0 they are 9.0's too (tools/unicode9.py checks).
inline void append_lower(std::u32string_view s, std::u32string& out, UnicodeData db) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const codepoint cp = s[i];
    if (cp < 0x80) {
      out.push_back(cp >= U'A' && cp <= U'Z' ? cp + 32 : cp);
    } else if (cp == 0x0130) {
      out.push_back(U'i');
      out.push_back(0x0307);
    } else if (cp == 0x03A3) {
      std::size_t j = i;
      while (j > 0 && is_case_ignorable(s[j - 1], db)) --j;
      bool final_sigma = j > 0 && is_cased(s[j - 1], db);
      if (final_sigma) {
        std::size_t k = i + 1;
        while (k < s.size() && is_case_ignorable(s[k], db)) ++k;
        final_sigma = k == s.size() || !is_cased(s[k], db);
      }
      out.push_back(final_sigma ? 0x03C2 : 0x03C3);
    } else {
      out.push_back(static_cast<codepoint>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    }
  }
}

// ---- NFD -----------------------------------------------------------------------------

/// Appends the canonical decomposition (NFD) of s to out: full recursive decomposition,
/// Hangul syllables into jamo, then canonical ordering of combining marks.
inline void append_nfd(std::u32string_view s, std::u32string& out) {
  const std::size_t begin = out.size();
  for (codepoint cp : s) {
    if (cp < 0xC0) {  // nothing below U+00C0 decomposes
      out.push_back(cp);
      continue;
    }
    utf8proc_int32_t buf[32];
    int boundclass = UTF8PROC_BOUNDCLASS_START;
    const auto n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buf, 32,
                                           UTF8PROC_DECOMPOSE, &boundclass);
    if (n < 0 || n > 32) throw Error("append_nfd: cannot decompose U+" + std::to_string(cp));
    for (int k = 0; k < n; ++k) out.push_back(static_cast<codepoint>(buf[k]));
  }
  // Canonical ordering: within each run of non-starters, a stable sort by combining class.
  const auto ccc = [](codepoint cp) {
    return utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class;
  };
  for (std::size_t i = begin; i < out.size();) {
    if (ccc(out[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < out.size() && ccc(out[j]) != 0) ++j;
    std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(i),
                     out.begin() + static_cast<std::ptrdiff_t>(j),
                     [&](codepoint a, codepoint b) { return ccc(a) < ccc(b); });
    i = j;
  }
}

}  // namespace ctdl::text
