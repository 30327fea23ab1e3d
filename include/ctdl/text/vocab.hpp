#pragma once
// Vocab: a BERT vocab.txt, one token a line, line i (from 0) is id i.
//
// Read as the original pipeline's tokenization.load_vocab reads it (Python's open():
// LF, CRLF or a lone CR ends a line): each line stripped of surrounding whitespace.
// Google's release reads through tf.gfile, which deletes CRs instead (a CR-only file is
// one token there). A token that appears on two lines is an error (Google's
// and Hugging Face's loaders disagree on which id it gets). The special tokens BERT needs
// ([PAD], [UNK], [CLS], [SEP]) must be present; their ids are looked up once.
//
// The same vocabulary can come from a Hugging Face tokenizer.json whose model is a
// WordPiece (Vocab::from_tokenizer_json): model.vocab maps each token to its id, and the
// ids must be 0..n-1, each once, so that id i is the token vocab.txt would have on line i.
// Its normalizer says whether the tokenizer lower-cases (tokenizer_json_lowercases).

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <nlohmann/json.hpp>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/text/unicode.hpp"

namespace ctdl::text {

/// Hash for std::string keys that also accepts std::string_view (lookups without a copy).
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

/// Strips what Python's str.strip() strips (is_python_space) from both ends.
inline std::string_view strip_python_space(std::string_view s) {
  const auto space_at_front = [&](std::size_t& n) {
    codepoint cp;
    n = decode_one(s, 0, cp);
    return n != 0 && is_python_space(cp);
  };
  std::size_t n = 0;
  while (!s.empty() && space_at_front(n)) s.remove_prefix(n);
  while (!s.empty()) {
    std::size_t start = s.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    codepoint cp;
    if (decode_one(s, start, cp) == 0 || !is_python_space(cp)) break;
    s.remove_suffix(s.size() - start);
  }
  return s;
}

class Vocab {
 public:
  struct SpecialIds {
    std::int32_t pad = 0, unk = 0, cls = 0, sep = 0;
  };

  /// Reads vocab.txt. Errors name the file (and line): missing or unreadable file,
  /// invalid UTF-8, an empty vocabulary, a missing special token.
  static Vocab from_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path.string() + ": cannot open the vocabulary file");
    std::vector<std::string> tokens;
    std::string chunk;
    // A line ends at LF, CRLF or a lone CR, as Python's universal newlines (and so the
    // original pipeline's load_vocab) read it: a CR-only file has a token a line, not one
    // line.
    while (std::getline(in, chunk)) {
      if (!chunk.empty() && chunk.back() == '\r') chunk.pop_back();
      std::string_view rest = chunk;
      for (;;) {
        const auto cr = rest.find('\r');
        const std::string_view line = rest.substr(0, cr);
        if (auto bad = find_invalid_utf8(line))
          throw Error(path.string() + ":" + std::to_string(tokens.size() + 1) +
                      ": invalid UTF-8 at byte " + std::to_string(*bad + 1) + " of the line");
        tokens.emplace_back(strip_python_space(line));
        if (cr == std::string_view::npos) break;
        rest.remove_prefix(cr + 1);
      }
    }
    if (in.bad()) throw Error(path.string() + ": read error");
    return Vocab(std::move(tokens), path.string());
  }

  /// Reads the WordPiece vocabulary of a Hugging Face tokenizer.json. Errors name the
  /// file: not JSON, a model other than WordPiece (BPE, Unigram, WordLevel: not a BERT
  /// vocabulary), ids that are not 0..n-1 each once, and those of the constructor.
  static Vocab from_tokenizer_json(const std::filesystem::path& path) {
    const nlohmann::json j = read_tokenizer_json(path);
    const std::string file = path.string();
    const auto model = j.find("model");
    if (model == j.end() || !model->is_object()) throw Error(file + ": has no \"model\" object (not a tokenizer.json?)");
    const auto type = model->find("type");
    const std::string type_name = type != model->end() && type->is_string() ? type->get<std::string>() : "(none)";
    if (type_name != "WordPiece")
      throw Error(file + ": the tokenizer's model is " + type_name +
                  ", not WordPiece: ctdl reads the WordPiece vocabularies of BERT models only");
    const auto vocab = model->find("vocab");
    if (vocab == model->end() || !vocab->is_object())
      throw Error(file + ": model.vocab is not an object of token: id");
    std::vector<std::string> tokens(vocab->size());
    std::vector<bool> taken(vocab->size());
    for (const auto& [token, id] : vocab->items()) {
      if (!id.is_number_unsigned() || id.get<std::uint64_t>() >= tokens.size())
        throw Error(file + ": model.vocab \"" + token + "\" has the id " + id.dump() + "; ids must be 0.." +
                    std::to_string(tokens.size() - 1) + " (one per token)");
      const auto i = static_cast<std::size_t>(id.get<std::uint64_t>());
      if (taken[i])
        throw Error(file + ": model.vocab gives the id " + std::to_string(i) + " to both \"" + tokens[i] + "\" and \"" +
                    token + "\"; ids must be 0.." + std::to_string(tokens.size() - 1) + ", each once");
      taken[i] = true;
      tokens[i] = token;
    }
    // n distinct ids in 0..n-1 cover every id: the vocabulary is dense.
    return Vocab(std::move(tokens), file);
  }

  /// Whether a tokenizer.json's normalizer lower-cases: BertNormalizer's "lowercase"
  /// (true when absent, as in Hugging Face), a Lowercase normalizer, or either inside a
  /// Sequence; false for no normalizer or one that does neither.
  static bool tokenizer_json_lowercases(const std::filesystem::path& path) {
    const nlohmann::json j = read_tokenizer_json(path);
    const auto it = j.find("normalizer");
    return it != j.end() && normalizer_lowercases(*it);
  }

  /// Whether `path` is a tokenizer.json rather than a vocab.txt: its name ends in .json,
  /// or its first non-blank byte is '{' (no BERT vocab.txt starts with a brace token).
  static bool is_tokenizer_json(const std::filesystem::path& path) {
    if (path.extension() == ".json") return true;
    std::ifstream in(path, std::ios::binary);
    char c = 0;
    while (in.get(c))
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return c == '{';
    return false;
  }

  /// vocab.txt or tokenizer.json, whichever `path` is (is_tokenizer_json).
  static Vocab from_vocab_or_tokenizer_json(const std::filesystem::path& path) {
    return is_tokenizer_json(path) ? from_tokenizer_json(path) : from_file(path);
  }

  /// A vocabulary from a token list (line i = tokens[i]); `source` names it in errors.
  explicit Vocab(std::vector<std::string> tokens, std::string source = "<vocab>")
      : tokens_(std::move(tokens)), source_(std::move(source)) {
    if (tokens_.empty()) throw Error(source_ + ": the vocabulary is empty");
    ids_.reserve(tokens_.size());
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      const auto [it, inserted] = ids_.emplace(tokens_[i], static_cast<std::int32_t>(i));
      if (!inserted)
        throw Error(source_ + ":" + std::to_string(i + 1) + ": the token '" + tokens_[i] +
                    "' is already on line " + std::to_string(it->second + 1) +
                    "; each token must appear once");
    }
    const auto special = [&](std::string_view token) {
      if (auto id = find(token)) return *id;
      throw Error(source_ + ": has no " + std::string(token) +
                  " token; a BERT vocabulary needs [PAD], [UNK], [CLS] and [SEP]");
    };
    special_.pad = special("[PAD]");
    special_.unk = special("[UNK]");
    special_.cls = special("[CLS]");
    special_.sep = special("[SEP]");
  }

  std::size_t size() const { return tokens_.size(); }
  const std::string& source() const { return source_; }
  const SpecialIds& special() const { return special_; }

  std::optional<std::int32_t> find(std::string_view token) const {
    const auto it = ids_.find(token);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  bool contains(std::string_view token) const { return ids_.find(token) != ids_.end(); }

  /// The id of a token that must exist (e.g. --replace_span); a clear error otherwise.
  std::int32_t require(std::string_view token, std::string_view what = "token") const {
    if (auto id = find(token)) return *id;
    throw Error(source_ + ": the " + std::string(what) + " '" + std::string(token) +
                "' is not in the vocabulary (" + std::to_string(tokens_.size()) + " tokens)");
  }

  const std::string& token(std::int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size())
      throw Error(source_ + ": token id " + std::to_string(id) + " is out of range [0, " +
                  std::to_string(tokens_.size()) + ")");
    return tokens_[static_cast<std::size_t>(id)];
  }
  const std::vector<std::string>& tokens() const { return tokens_; }

  /// A 64-bit FNV-1a hash of the token list (each token and a separator), so a cache
  /// built with one vocabulary is never read with another.
  std::uint64_t fingerprint() const {
    std::uint64_t h = 0xcbf29ce484222325ull;
    const auto mix = [&](unsigned char c) { h = (h ^ c) * 0x100000001b3ull; };
    for (const auto& t : tokens_) {
      for (char c : t) mix(static_cast<unsigned char>(c));
      mix('\n');
    }
    return h;
  }

 private:
  static nlohmann::json read_tokenizer_json(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path.string() + ": cannot open the tokenizer file");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // A tokenizer.json nests a few levels (normalizer sequences, post-processor templates);
    // anything past 64 is not one, and the recursive parser must not meet it.
    int depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (in_string) {
        if (c == '\\') ++i;
        else if (c == '"') in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '[' || c == '{') {
        if (++depth > 64) throw Error(path.string() + ": the JSON nests more than 64 levels deep (not a tokenizer.json)");
      } else if (c == ']' || c == '}') {
        --depth;
      }
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(path.string() + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw Error(path.string() + ": not a tokenizer.json (not a JSON object)");
    return j;
  }

  static bool normalizer_lowercases(const nlohmann::json& n) {
    if (!n.is_object()) return false;
    const std::string type = n.value("type", std::string());
    if (type == "Lowercase") return true;
    if (type == "BertNormalizer") return n.value("lowercase", true);
    if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array())
      return std::any_of(n["normalizers"].begin(), n["normalizers"].end(), [](const nlohmann::json& m) { return normalizer_lowercases(m); });
    return false;
  }

  std::vector<std::string> tokens_;
  StringMap<std::int32_t> ids_;
  std::string source_;
  SpecialIds special_;
};

}  // namespace ctdl::text
