// The Unicode predicates, lower-casing and NFD that the BERT tokenizer is built on.
#include <catch2/catch.hpp>

#include <ctdl/text/unicode.hpp>

#include <span>
#include <string>

using namespace ctdl::text;

TEST_CASE("find_invalid_utf8 accepts well-formed text and finds the first bad byte") {
  CHECK_FALSE(find_invalid_utf8("plain ASCII, long enough to take the 8-byte path").has_value());
  CHECK_FALSE(find_invalid_utf8("caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\xA4\x96").has_value());  // é 中 🤖
  CHECK(find_invalid_utf8("ab\xC3").value() == 2);                 // truncated sequence
  CHECK(find_invalid_utf8("abcdefghij\xC0\x80").value() == 10);    // overlong NUL
  CHECK(find_invalid_utf8("x\xED\xA0\x80").value() == 1);          // UTF-16 surrogate
  CHECK(find_invalid_utf8("\xF4\x90\x80\x80").value() == 0);       // above U+10FFFF
  CHECK(find_invalid_utf8("ok \xFF").value() == 3);                // never valid
  CHECK(find_invalid_utf8("\x80 stray continuation").value() == 0);
}

TEST_CASE("UTF-8 round trip and code point counting") {
  const std::string s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\xA4\x96";
  const auto u = to_utf32(s);
  REQUIRE(u == U"a\u00E9\u4E2D\U0001F916");
  CHECK(to_utf8(u) == s);
  CHECK(count_codepoints(s) == 4);
}

TEST_CASE("character classes follow tokenization.py") {
  // What holds in both databases: every character here is in Unicode 9.0.
  for (auto db : {UnicodeData::v9_0, UnicodeData::utf8proc}) {
    CAPTURE(static_cast<int>(db));
    // control, both rules: Cc and Cf except tab/newline/CR (whitespace to both releases)
    for (auto rule : {ControlCategories::all_c, ControlCategories::cc_cf}) {
      CHECK(is_control(0x00, rule, db));
      CHECK(is_control(0x7F, rule, db));
      CHECK(is_control(0x85, rule, db));
      CHECK(is_control(0x200B, rule, db));  // zero-width space (Cf)
      CHECK(is_control(0xFEFF, rule, db));  // BOM (Cf)
      CHECK(is_control(0x00AD, rule, db));  // soft hyphen (Cf)
      CHECK_FALSE(is_control(U'\t', rule, db));
      CHECK_FALSE(is_control(U'\n', rule, db));
      CHECK_FALSE(is_control(U'\r', rule, db));
      CHECK_FALSE(is_control(U'a', rule, db));
      CHECK_FALSE(is_control(0x4E2D, rule, db));
    }
    // the original pipeline's rule drops every C* category; Google's keeps Co, Cn, Cs
    for (char32_t c : {0xE000, 0xF8FF, 0xF0000, 0x10FFFD}) {  // private use (Co)
      CHECK(is_control(c, ControlCategories::all_c, db));
      CHECK_FALSE(is_control(c, ControlCategories::cc_cf, db));
    }
    for (char32_t c : {0x0378, 0xFFFF, 0xFDD0, 0xE0080}) {  // unassigned, noncharacters (Cn)
      CHECK(is_control(c, ControlCategories::all_c, db));
      CHECK_FALSE(is_control(c, ControlCategories::cc_cf, db));
    }
    CHECK(is_control(0xD800, ControlCategories::all_c, db));  // a surrogate (Cs): not in valid UTF-8
    CHECK_FALSE(is_control(0xD800, ControlCategories::cc_cf, db));
    // whitespace: space, \t \n \r, Zs
    CHECK(is_whitespace(U' ', db));
    CHECK(is_whitespace(0x00A0, db));
    CHECK(is_whitespace(0x3000, db));
    CHECK(is_whitespace(0x2009, db));
    CHECK_FALSE(is_whitespace(0x2028, db));  // Zl: not whitespace to BERT ...
    // punctuation: the ASCII ranges (including symbols $ ^ `) and P*
    for (char32_t c : U"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") if (c) CHECK(is_punctuation(c, db));
    CHECK(is_punctuation(0x00BF, db));  // ¿
    CHECK(is_punctuation(0x2014, db));  // em dash
    CHECK(is_punctuation(0x300C, db));  // 「
    CHECK_FALSE(is_punctuation(0x20AC, db));  // € is Sc
    CHECK_FALSE(is_punctuation(U'a', db));
  }
  CHECK(is_python_space(0x2028));  // ... but str.split() splits there
  CHECK_FALSE(is_python_space(0x200B));
  // CJK: ideographs and compatibility ideographs, not kana or hangul
  CHECK(is_cjk(0x4E2D));
  CHECK(is_cjk(0xF900));
  CHECK(is_cjk(0x20000));
  CHECK_FALSE(is_cjk(0x3042));  // あ
  CHECK_FALSE(is_cjk(0xD55C));  // 한
}

TEST_CASE("Unicode 9.0's categories: the original pipeline's Python 3.6") {
  const auto v9 = [](char32_t cp) { return category(cp, UnicodeData::v9_0); };
  const auto now = [](char32_t cp) { return category(cp, UnicodeData::utf8proc); };
  // Assigned since 9.0: unassigned (Cn), so control, to the original; not to utf8proc.
  for (char32_t c : {0x9FD6,     // CJK ideograph, Unicode 10.0 (9.0's last in its block: U+9FD5)
                     0x1F92A,    // 🤪, emoji of 10.0
                     0x0860,     // Syriac Malayalam, 10.0
                     0x1E030}) { // modifier letter, 15.0
    CAPTURE(static_cast<std::uint32_t>(c));
    CHECK(v9(c) == UTF8PROC_CATEGORY_CN);
    CHECK(now(c) != UTF8PROC_CATEGORY_CN);
    CHECK(is_control(c, ControlCategories::all_c, UnicodeData::v9_0));
    CHECK_FALSE(is_control(c, ControlCategories::all_c, UnicodeData::utf8proc));
  }
  CHECK(v9(0x9FD5) == UTF8PROC_CATEGORY_LO);
  CHECK(v9(0x1F916) == UTF8PROC_CATEGORY_SO);  // 🤖, Unicode 8.0
  // Categories that changed after 9.0, each in a way the tokenizer sees.
  CHECK(v9(0x166D) == UTF8PROC_CATEGORY_PO);  // Canadian syllabics chi sign: So since 12.0
  CHECK(is_punctuation(0x166D, UnicodeData::v9_0));
  CHECK_FALSE(is_punctuation(0x166D, UnicodeData::utf8proc));
  CHECK(v9(0x111C9) == UTF8PROC_CATEGORY_PO);  // Sharada sandhi mark: Mn since 10.0
  CHECK(now(0x111C9) == UTF8PROC_CATEGORY_MN);
  CHECK(v9(0x1734) == UTF8PROC_CATEGORY_MN);   // Hanunoo pamudpod: Mc since 14.0 (stripped when uncased)
  CHECK(now(0x1734) == UTF8PROC_CATEGORY_MC);
  CHECK(v9(0x10D0) == UTF8PROC_CATEGORY_LO);   // Georgian an: Ll since 11.0
  CHECK(now(0x10D0) == UTF8PROC_CATEGORY_LL);

  // The table itself: sorted runs from U+0000, each of another category than the last,
  // and -- an independent check of the generated data -- every character assigned in 9.0
  // has utf8proc's category there, except the few whose category Unicode changed since.
  const auto& runs = unicode_9_0::category_runs;
  REQUIRE(runs[0].first == 0);
  for (std::size_t i = 1; i < std::size(runs); ++i) {
    CHECK(runs[i].first > runs[i - 1].first);
    CHECK(runs[i].category != runs[i - 1].category);
  }
  CHECK(std::size(runs) > 3000);
  // The changes listed are those up to Unicode 15.0, utf8proc 2.8's (Debian 12's); another
  // utf8proc has others (16.0 changes U+1171E, for one), so there the list is not checked.
  const std::string utf8proc_unicode = utf8proc_unicode_version();
  std::size_t assigned = 0, changed = 0;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (v9(cp) == UTF8PROC_CATEGORY_CN) continue;
    ++assigned;
    if (v9(cp) != now(cp)) {
      ++changed;
      const bool georgian = cp >= 0x10D0 && cp <= 0x10FF;  // Mkhedruli: Lo -> Ll in 11.0
      const bool known = georgian || cp == 0x166D || cp == 0x111C9 || cp == 0x1734 || cp == 0xA9BD ||
                         cp == 0x1CF2 || cp == 0x1CF3;
      CAPTURE(static_cast<std::uint32_t>(cp), static_cast<int>(v9(cp)), static_cast<int>(now(cp)));
      if (utf8proc_unicode == "15.0.0") CHECK(known);
    }
  }
  CHECK(assigned == 267'753);  // Unicode 9.0's assigned code points (Co and Cs included)
  if (utf8proc_unicode == "15.0.0") {
    CHECK(changed == 52);
  } else {
    WARN("utf8proc's Unicode is " << utf8proc_unicode << ", not 15.0.0: " << changed
                                  << " category changes since 9.0 found, the list of 52 not checked");
  }
  // The final-sigma properties: sorted toggles, and a few known values.
  for (const auto& toggles : {std::span<const char32_t>(unicode_9_0::cased_toggles),
                              std::span<const char32_t>(unicode_9_0::case_ignorable_toggles)}) {
    CHECK(toggles.size() % 2 == 0);  // every run ends below U+110000
    for (std::size_t i = 1; i < toggles.size(); ++i) CHECK(toggles[i] > toggles[i - 1]);
  }
  CHECK(is_cased(U'A', UnicodeData::v9_0));
  CHECK(is_cased(0x00AA, UnicodeData::v9_0));  // ª: Other_Lowercase
  CHECK_FALSE(is_cased(0x10D0, UnicodeData::v9_0));
  CHECK(is_case_ignorable(U'\'', UnicodeData::v9_0));
  CHECK(is_case_ignorable(0x0301, UnicodeData::v9_0));  // a combining mark (Mn)
  CHECK_FALSE(is_case_ignorable(0x055F, UnicodeData::v9_0));
  CHECK_FALSE(is_case_ignorable(U'a', UnicodeData::v9_0));
}

TEST_CASE("append_lower is Python's str.lower()") {
  const auto lower = [](std::u32string_view s) {
    std::u32string out;
    append_lower(s, out, UnicodeData::v9_0);
    return out;
  };
  CHECK(lower(U"ABC xyz") == U"abc xyz");
  CHECK(lower(U"\u0130") == U"i\u0307");                  // İ -> i + combining dot
  CHECK(lower(U"\u1E9E") == U"\u00DF");                   // ẞ -> ß
  CHECK(lower(U"\u039F\u0394\u039F\u03A3") == U"\u03BF\u03B4\u03BF\u03C2");  // ΟΔΟΣ -> οδος
  CHECK(lower(U"\u03A3") == U"\u03C3");                   // alone: not final
  CHECK(lower(U"\u0391\u03A3.") == U"\u03B1\u03C2.");     // '.' is case-ignorable
  CHECK(lower(U"\u0391\u03A3'\u0392") == U"\u03B1\u03C3'\u03B2");  // followed by a letter
  CHECK(lower(U"\u0391\u03A31") == U"\u03B1\u03C21");     // a digit is not cased
  CHECK(lower(U"\u2160") == U"\u2170");                   // Ⅰ -> ⅰ
  // The final-sigma properties are the database's: U+055F became case-ignorable and
  // Georgian U+10D0 cased in Unicode 11.0 (Python 3.6 saw neither).
  const auto lower_now = [](std::u32string_view s) {
    std::u32string out;
    append_lower(s, out, UnicodeData::utf8proc);
    return out;
  };
  CHECK(lower(U"\u0391\u03A3\u055F\u0391") == U"\u03B1\u03C2\u055F\u03B1");
  CHECK(lower_now(U"\u0391\u03A3\u055F\u0391") == U"\u03B1\u03C3\u055F\u03B1");
  CHECK(lower(U"\u039F\u03A3\u10D0") == U"\u03BF\u03C2\u10D0");
  CHECK(lower_now(U"\u039F\u03A3\u10D0") == U"\u03BF\u03C3\u10D0");
  CHECK(lower_now(U"\u0391\u03A3'\u0392") == U"\u03B1\u03C3'\u03B2");
}

TEST_CASE("append_nfd decomposes and orders combining marks canonically") {
  const auto nfd = [](std::u32string_view s) {
    std::u32string out;
    append_nfd(s, out);
    return out;
  };
  CHECK(nfd(U"\u00E9") == U"e\u0301");
  CHECK(nfd(U"\u1E69") == U"s\u0323\u0307");            // ṩ: two levels of decomposition
  CHECK(nfd(U"a\u0301\u0323") == U"a\u0323\u0301");     // ccc 220 before ccc 230
  CHECK(nfd(U"\uD55C") == U"\u1112\u1161\u11AB");       // 한 -> jamo
  CHECK(nfd(U"\uF900") == U"\u8C48");                   // compatibility ideograph
  CHECK(nfd(U"\uFB01") == U"\uFB01");                   // ﬁ: compatibility only, kept
}
