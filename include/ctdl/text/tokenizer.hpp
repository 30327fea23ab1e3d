#pragma once
// BERT's tokenizers, token for token as tokenization.py. Two releases of that file differ
// in two rules, and TokenizerRules picks one (docs/data.md has the table, with Hugging Face):
//   original  the original pipeline's tokenization.py (run_ner_consensus.py ships it), the
//             default: a word over 100 code points is [UNK]; every category "C*" is control;
//             categories as its Python 3.6 had them (Unicode 9.0: a character assigned
//             since is unassigned, Cn, so dropped)
//   google    Google's first BERT release (bert-tensorflow 1.0.4): 200 code points; only
//             Cc and Cf are control; utf8proc's categories
// Both treat tab, newline and carriage return as whitespace, never as control.
//
//   BasicTokenizer      text -> words: drop NUL, U+FFFD and control characters; space
//                       around CJK ideographs; split on whitespace as Python's str.split()
//                       does; for uncased models Python's lower() then NFD without
//                       Mn marks; every punctuation character becomes its own word.
//   WordPieceTokenizer  word -> vocabulary ids: greedy longest match first, pieces after
//                       the first carry "##"; a word with no complete match, or longer
//                       than max_input_chars_per_word code points, becomes [UNK].
//   FullTokenizer       both, over one Vocab.
//
// The tokenizers are immutable after construction and safe to share between threads
// (scratch buffers are thread_local).

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/text/unicode.hpp"
#include "ctdl/text/vocab.hpp"

namespace ctdl::text {

/// Text that is not well-formed UTF-8. `byte` is the offset of the first bad byte; the
/// caller adds the file and line.
class InvalidUtf8 : public Error {
 public:
  explicit InvalidUtf8(std::size_t byte_offset)
      : Error("invalid UTF-8 at byte " + std::to_string(byte_offset + 1)), byte(byte_offset) {}
  std::size_t byte;
};

/// Words as UTF-8 bytes back to back, with the end offset of each.
struct Words {
  std::string bytes;
  std::vector<std::uint32_t> ends;

  std::size_t size() const { return ends.size(); }
  std::string_view operator[](std::size_t i) const {
    const std::uint32_t begin = i == 0 ? 0 : ends[i - 1];
    return std::string_view(bytes).substr(begin, ends[i] - begin);
  }
  void clear() {
    bytes.clear();
    ends.clear();
  }
  void end_word() {
    if (bytes.size() != (ends.empty() ? 0 : ends.back()))
      ends.push_back(static_cast<std::uint32_t>(bytes.size()));
  }
};

/// Which release of tokenization.py the tokenizer reproduces.
enum class TokenizerRules : std::uint8_t {
  original,  ///< the original pipeline's: [UNK] above 100 code points; all C* are control; Unicode 9.0
  google,    ///< Google's first BERT release: [UNK] above 200 code points; Cc and Cf only; utf8proc's Unicode
};

/// The settings a TokenizerRules stands for.
struct TokenizerRuleSet {
  std::size_t max_input_chars_per_word;
  ControlCategories control;
  UnicodeData unicode;
};

constexpr TokenizerRuleSet rule_set(TokenizerRules rules) {
  return rules == TokenizerRules::google
             ? TokenizerRuleSet{200, ControlCategories::cc_cf, UnicodeData::utf8proc}
             : TokenizerRuleSet{100, ControlCategories::all_c, UnicodeData::v9_0};
}

/// "original" or "google", the names the programs' --tokenizer_rules flag takes.
constexpr std::string_view to_string(TokenizerRules rules) {
  return rules == TokenizerRules::google ? "google" : "original";
}

/// The rules named `name`; throws an Error that names the value and the choices.
inline TokenizerRules parse_tokenizer_rules(std::string_view name) {
  if (name == "original") return TokenizerRules::original;
  if (name == "google") return TokenizerRules::google;
  throw Error("tokenizer rules '" + std::string(name) +
              "': must be original (the original pipeline's tokenization.py) or google (Google's first BERT release)");
}

namespace detail {

/// What the basic tokenizer does with a character.
enum class CharClass : std::uint8_t { drop, space, cjk, punctuation, other };

inline CharClass classify_slow(codepoint cp, ControlCategories control, UnicodeData db) {
  if (cp == 0 || cp == 0xFFFD || is_control(cp, control, db)) return CharClass::drop;
  // After cleaning, str.split() also splits at U+2028 and U+2029 (categories Zl, Zp),
  // which _is_whitespace does not turn into spaces.
  if (is_whitespace(cp, db) || is_python_space(cp)) return CharClass::space;
  if (is_cjk(cp)) return CharClass::cjk;
  if (is_punctuation(cp, db)) return CharClass::punctuation;
  return CharClass::other;
}

// One table serves every rule: the only C* category in ASCII is Cc, and no ASCII
// character's category has changed since Unicode 1.1.
inline const std::array<CharClass, 128>& ascii_classes() {
  static const auto table = [] {
    std::array<CharClass, 128> t{};
    for (codepoint cp = 0; cp < 128; ++cp) t[cp] = classify_slow(cp, ControlCategories::cc_cf, UnicodeData::utf8proc);
    return t;
  }();
  return table;
}

inline CharClass classify(codepoint cp, ControlCategories control, UnicodeData db) {
  return cp < 128 ? ascii_classes()[cp] : classify_slow(cp, control, db);
}

}  // namespace detail

class BasicTokenizer {
 public:
  struct Options {
    bool lower_case = true;  ///< uncased models: lower-case and strip accents
    /// What counts as a control character (dropped): the original pipeline's rule by default.
    ControlCategories control = rule_set(TokenizerRules::original).control;
    /// Whose general categories: the original pipeline's (Unicode 9.0) by default.
    UnicodeData unicode = rule_set(TokenizerRules::original).unicode;
  };

  BasicTokenizer() = default;
  explicit BasicTokenizer(Options options) : options_(options) {}

  const Options& options() const { return options_; }

  /// Appends the words of `text` to `out`. Throws InvalidUtf8 for ill-formed text.
  void tokenize(std::string_view text, Words& out) const {
    thread_local std::u32string token;
    token.clear();
    codepoint cp;
    for (std::size_t pos = 0; pos < text.size();) {
      const auto n = decode_one(text, pos, cp);
      if (n == 0) throw InvalidUtf8(pos);
      pos += n;
      switch (detail::classify(cp, options_.control, options_.unicode)) {
        case detail::CharClass::drop:
          break;
        case detail::CharClass::space:
          finish_token(token, out);
          break;
        case detail::CharClass::cjk:
          finish_token(token, out);
          token.push_back(cp);
          finish_token(token, out);
          break;
        default:
          token.push_back(cp);
      }
    }
    finish_token(token, out);
  }

  std::vector<std::string> tokenize(std::string_view text) const {
    Words words;
    tokenize(text, words);
    std::vector<std::string> out;
    out.reserve(words.size());
    for (std::size_t i = 0; i < words.size(); ++i) out.emplace_back(words[i]);
    return out;
  }

 private:
  // One whitespace-separated token of the cleaned text: lower-case and strip accents if
  // uncased, then split off punctuation. Empties `token`.
  void finish_token(std::u32string& token, Words& out) const {
    if (token.empty()) return;
    std::u32string_view view = token;
    thread_local std::u32string lowered, decomposed;
    if (options_.lower_case) {
      lowered.clear();
      append_lower(token, lowered, options_.unicode);
      view = lowered;
      if (std::any_of(lowered.begin(), lowered.end(), [](codepoint c) { return c >= 0xC0; })) {
        decomposed.clear();
        append_nfd(lowered, decomposed);
        std::erase_if(decomposed, [db = options_.unicode](codepoint c) { return category(c, db) == UTF8PROC_CATEGORY_MN; });
        view = decomposed;
      }
    }
    for (codepoint cp : view) {
      const bool punct = cp < 128 ? detail::ascii_classes()[cp] == detail::CharClass::punctuation
                                  : is_punctuation(cp, options_.unicode);
      if (punct) {
        out.end_word();
        append_utf8(out.bytes, cp);
        out.end_word();
      } else {
        append_utf8(out.bytes, cp);
      }
    }
    out.end_word();
    token.clear();
  }

  Options options_;
};

class WordPieceTokenizer {
 public:
  struct Options {
    std::string unk_token = "[UNK]";
    /// Longer words become [UNK]. 100 is the original pipeline's tokenization.py (and
    /// Hugging Face's); Google's first BERT release uses 200.
    std::size_t max_input_chars_per_word = rule_set(TokenizerRules::original).max_input_chars_per_word;
  };

  explicit WordPieceTokenizer(const Vocab& vocab) : WordPieceTokenizer(vocab, Options{}) {}
  WordPieceTokenizer(const Vocab& vocab, Options options)
      : options_(std::move(options)), unk_(vocab.require(options_.unk_token, "unknown token")) {
    for (std::size_t i = 0; i < vocab.size(); ++i) {
      std::string_view t = vocab.tokens()[i];
      const auto id = static_cast<std::int32_t>(i);
      if (t.starts_with("##")) {
        t.remove_prefix(2);
        continuation_.insert_or_assign(std::string(t), id);
        max_continuation_bytes_ = std::max(max_continuation_bytes_, t.size());
      } else {
        initial_.insert_or_assign(std::string(t), id);
        max_initial_bytes_ = std::max(max_initial_bytes_, t.size());
      }
    }
  }

  const Options& options() const { return options_; }

  /// Appends the ids of one word's pieces (or the [UNK] id) to `ids`.
  void tokenize(std::string_view word, std::vector<std::int32_t>& ids) const {
    if (word.empty()) return;
    if (count_codepoints(word) > options_.max_input_chars_per_word) {
      ids.push_back(unk_);
      return;
    }
    const auto continuation_byte = [&](std::size_t i) {
      return i < word.size() && (static_cast<unsigned char>(word[i]) & 0xC0) == 0x80;
    };
    const std::size_t mark = ids.size();
    for (std::size_t start = 0; start < word.size();) {
      const auto& pieces = start == 0 ? initial_ : continuation_;
      const std::size_t longest = start == 0 ? max_initial_bytes_ : max_continuation_bytes_;
      std::size_t end = std::min(word.size(), start + longest);
      while (continuation_byte(end)) --end;
      bool found = false;
      while (end > start) {
        if (auto it = pieces.find(word.substr(start, end - start)); it != pieces.end()) {
          ids.push_back(it->second);
          found = true;
          break;
        }
        do --end; while (end > start && continuation_byte(end));
      }
      if (!found) {  // no piece matches here: the whole word is unknown
        ids.resize(mark);
        ids.push_back(unk_);
        return;
      }
      start = end;
    }
  }

 private:
  Options options_;
  std::int32_t unk_;
  StringMap<std::int32_t> initial_;       // pieces that start a word
  StringMap<std::int32_t> continuation_;  // "##" pieces, keyed without the "##"
  std::size_t max_initial_bytes_ = 0, max_continuation_bytes_ = 0;
};

class FullTokenizer {
 public:
  struct Options {
    bool lower_case = true;
    TokenizerRules rules = TokenizerRules::original;
    /// Overrides the rules' word length limit when not 0.
    std::size_t max_input_chars_per_word = 0;
  };

  FullTokenizer(Vocab vocab, Options options)
      : vocab_(std::move(vocab)),
        rules_(options.rules),
        basic_({.lower_case = options.lower_case,
                .control = rule_set(options.rules).control,
                .unicode = rule_set(options.rules).unicode}),
        wordpiece_(vocab_, {.max_input_chars_per_word = options.max_input_chars_per_word != 0
                                                            ? options.max_input_chars_per_word
                                                            : rule_set(options.rules).max_input_chars_per_word}) {}

  const Vocab& vocab() const { return vocab_; }
  TokenizerRules rules() const { return rules_; }
  const BasicTokenizer& basic() const { return basic_; }
  const WordPieceTokenizer& wordpiece() const { return wordpiece_; }

  /// Appends the ids of text's word pieces to `ids`. Throws InvalidUtf8.
  void tokenize_ids(std::string_view text, std::vector<std::int32_t>& ids) const {
    thread_local Words words;
    words.clear();
    basic_.tokenize(text, words);
    for (std::size_t i = 0; i < words.size(); ++i) wordpiece_.tokenize(words[i], ids);
  }

  /// Appends the first ids of text's pieces, at least until `ids` holds `limit` ids (the
  /// word being split when it gets there is finished). Words after that are not split.
  void tokenize_ids_head(std::string_view text, std::vector<std::int32_t>& ids, std::size_t limit) const {
    thread_local Words words;
    words.clear();
    basic_.tokenize(text, words);
    for (std::size_t i = 0; i < words.size() && ids.size() < limit; ++i) wordpiece_.tokenize(words[i], ids);
  }

  /// Appends the last `count` ids of text's pieces (all of them when there are fewer),
  /// splitting words from the end only as far as needed.
  void tokenize_ids_tail(std::string_view text, std::vector<std::int32_t>& ids, std::size_t count) const {
    thread_local Words words;
    thread_local std::vector<std::int32_t> reversed, word_ids;
    words.clear();
    reversed.clear();
    basic_.tokenize(text, words);
    for (std::size_t i = words.size(); i-- > 0 && reversed.size() < count;) {
      word_ids.clear();
      wordpiece_.tokenize(words[i], word_ids);
      reversed.insert(reversed.end(), word_ids.rbegin(), word_ids.rend());
    }
    const std::size_t n = std::min(count, reversed.size());
    ids.insert(ids.end(), reversed.rend() - static_cast<std::ptrdiff_t>(n), reversed.rend());
  }

  std::vector<std::int32_t> tokenize_ids(std::string_view text) const {
    std::vector<std::int32_t> ids;
    tokenize_ids(text, ids);
    return ids;
  }

  std::vector<std::string> tokenize(std::string_view text) const {
    std::vector<std::string> tokens;
    for (auto id : tokenize_ids(text)) tokens.push_back(vocab_.token(id));
    return tokens;
  }

 private:
  Vocab vocab_;
  TokenizerRules rules_;
  BasicTokenizer basic_;
  WordPieceTokenizer wordpiece_;
};

}  // namespace ctdl::text
