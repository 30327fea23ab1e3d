#pragma once
// Chunk (entity) precision, recall and F1 as the CoNLL-2000 script conlleval.pl (version
// 2004-01-26, default options) computes them: the score that BioBERT's and NVIDIA's NER
// recipes report, from the same tags, with the same report text.
//
//   metrics::ConllEvaluator eval;
//   for each sentence: for each word: eval.add(gold_tag, predicted_tag);  then eval.end_sentence();
//   const metrics::ConllScores s = eval.scores();   // s.overall.f1, s.per_type["Chemical"], s.accuracy
//   std::fputs(s.report().c_str(), stdout);          // conlleval.pl's output, byte for byte
//
// A tag is "X-TYPE" (split at its first '-': "B-Chemical", "I-gene-or-protein") or a bare
// "X" of no type ("B", "I", "O" as BC5CDR writes them). The script's rules, kept exactly:
//   - a chunk starts at B; at I or E after O; at E after E, I after E, B after I or B;
//     at any tag other than O and "." whose type differs from the previous one's; at "["
//     and "]" (chunks of one word). It ends where the next word starts another or is O
//     (the same rules read from the other side). IOB1, IOB2 and IOE tags all work; an S
//     of IOBES is not one of its tags (a run of S of one type is one chunk, as the script
//     counts it).
//   - a predicted chunk is correct when it starts and ends where a gold chunk does, with
//     the same type, and every word between has the same type in both;
//   - accuracy is over words: tag and type both equal; sentence boundaries are not words
//     but end every chunk;
//   - precision = correct / predicted chunks, recall = correct / gold chunks, F1 their
//     harmonic mean, each 0 where its denominator is 0. Fractions here (0..1); the report
//     prints percentages, as the script does.
// Two of the script's quirks are kept so that reports match: a type "0" counts as no
// type (Perl reads "0" as false), and the line of the empty type is printed twice when
// both gold and predicted chunks have it (its de-duplication also reads "" as false).

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>

namespace ctdl::metrics {

struct ChunkScores {
  std::int64_t gold = 0;       ///< chunks in the gold tags
  std::int64_t predicted = 0;  ///< chunks in the predicted tags
  std::int64_t correct = 0;    ///< predicted chunks that match a gold one exactly
  double precision = 0, recall = 0, f1 = 0;
};

struct ConllScores {
  std::int64_t words = 0;          ///< tokens scored (sentence boundaries excluded)
  std::int64_t correct_words = 0;  ///< tag and type equal
  double accuracy = 0;             ///< correct_words / words (0 with no words)
  ChunkScores overall;
  std::map<std::string, ChunkScores> per_type;  ///< byte order, as Perl's sort ("" for untyped chunks)
  /// Whether the empty type occurs among both the gold and the predicted chunks (the script
  /// then prints its line twice).
  bool untyped_in_both = false;

  /// conlleval.pl's report: the totals, then one line per chunk type.
  std::string report() const;
};

class ConllEvaluator {
 public:
  /// The next word's gold and predicted tags.
  void add(std::string_view gold, std::string_view predicted) { step(split(gold), split(predicted), true); }
  /// A sentence boundary (the script's empty line): every open chunk ends here.
  void end_sentence() { step({"O", ""}, {"O", ""}, false); }
  /// The scores of everything added so far (a chunk still open counts as ended).
  ConllScores scores() const;

 private:
  struct Tag {
    std::string_view chunk, type;
  };
  struct Counts {
    std::int64_t gold = 0, predicted = 0, correct = 0;
  };
  static Tag split(std::string_view tag) {
    const auto dash = tag.find('-');
    if (dash == std::string_view::npos) return {tag, ""};
    Tag t{tag.substr(0, dash), tag.substr(dash + 1)};
    if (t.type == "0") t.type = "";  // Perl: "0" is false, and the script writes `$type ? $type : ""`
    return t;
  }
  static bool ends(std::string_view prev, std::string_view tag, std::string_view prev_type, std::string_view type);
  static bool starts(std::string_view prev, std::string_view tag, std::string_view prev_type, std::string_view type);
  void step(Tag gold, Tag predicted, bool word);

  // The previous word's tags (owned: the caller's strings need not outlive add()).
  std::string last_gold_ = "O", last_gold_type_, last_predicted_ = "O", last_predicted_type_;
  bool in_correct_ = false;  // the chunk open in both is correct so far
  std::int64_t words_ = 0, correct_words_ = 0;
  Counts total_;
  std::map<std::string, Counts> per_type_;
  bool untyped_gold_ = false, untyped_predicted_ = false;
};

// ============================================================================

inline bool ConllEvaluator::ends(std::string_view prev, std::string_view tag, std::string_view prev_type,
                                 std::string_view type) {
  if ((prev == "B" || prev == "I") && (tag == "B" || tag == "O")) return true;
  if (prev == "E" && (tag == "E" || tag == "I" || tag == "O")) return true;
  if (prev != "O" && prev != "." && prev_type != type) return true;
  return prev == "]" || prev == "[";
}

inline bool ConllEvaluator::starts(std::string_view prev, std::string_view tag, std::string_view prev_type,
                                   std::string_view type) {
  if ((prev == "B" || prev == "I" || prev == "O") && tag == "B") return true;
  if (prev == "O" && (tag == "I" || tag == "E")) return true;
  if (prev == "E" && (tag == "E" || tag == "I")) return true;
  if (tag != "O" && tag != "." && prev_type != type) return true;
  return tag == "[" || tag == "]";
}

inline void ConllEvaluator::step(Tag gold, Tag predicted, bool word) {
  const bool gold_ends = ends(last_gold_, gold.chunk, last_gold_type_, gold.type);
  const bool predicted_ends = ends(last_predicted_, predicted.chunk, last_predicted_type_, predicted.type);
  if (in_correct_) {
    if (gold_ends && predicted_ends && last_predicted_type_ == last_gold_type_) {
      in_correct_ = false;
      ++total_.correct;
      ++per_type_[last_gold_type_].correct;
    } else if (gold_ends != predicted_ends || predicted.type != gold.type) {
      in_correct_ = false;
    }
  }
  const bool gold_starts = starts(last_gold_, gold.chunk, last_gold_type_, gold.type);
  const bool predicted_starts = starts(last_predicted_, predicted.chunk, last_predicted_type_, predicted.type);
  if (gold_starts && predicted_starts && predicted.type == gold.type) in_correct_ = true;
  if (gold_starts) {
    ++total_.gold;
    ++per_type_[std::string(gold.type)].gold;
    untyped_gold_ = untyped_gold_ || gold.type.empty();
  }
  if (predicted_starts) {
    ++total_.predicted;
    ++per_type_[std::string(predicted.type)].predicted;
    untyped_predicted_ = untyped_predicted_ || predicted.type.empty();
  }
  if (word) {
    if (gold.chunk == predicted.chunk && gold.type == predicted.type) ++correct_words_;
    ++words_;
  }
  last_gold_ = gold.chunk;
  last_gold_type_ = gold.type;
  last_predicted_ = predicted.chunk;
  last_predicted_type_ = predicted.type;
}

namespace conlleval_detail {
inline ChunkScores chunk_scores(std::int64_t gold, std::int64_t predicted, std::int64_t correct) {
  ChunkScores s{gold, predicted, correct};
  if (predicted > 0) s.precision = static_cast<double>(correct) / static_cast<double>(predicted);
  if (gold > 0) s.recall = static_cast<double>(correct) / static_cast<double>(gold);
  if (s.precision + s.recall > 0) s.f1 = 2 * s.precision * s.recall / (s.precision + s.recall);
  return s;
}
}  // namespace conlleval_detail

inline ConllScores ConllEvaluator::scores() const {
  Counts total = total_;
  auto per_type = per_type_;
  if (in_correct_) {  // the script's last chunk, closed by the end of its input
    ++total.correct;
    ++per_type[last_gold_type_].correct;
  }
  ConllScores s;
  s.words = words_;
  s.correct_words = correct_words_;
  if (words_ > 0) s.accuracy = static_cast<double>(correct_words_) / static_cast<double>(words_);
  s.overall = conlleval_detail::chunk_scores(total.gold, total.predicted, total.correct);
  for (const auto& [type, c] : per_type) s.per_type[type] = conlleval_detail::chunk_scores(c.gold, c.predicted, c.correct);
  s.untyped_in_both = untyped_gold_ && untyped_predicted_;
  return s;
}

inline std::string ConllScores::report() const {
  // Percentages computed from the counts in the script's order of operations
  // (100 * correct / found, then 2 * p * r / (p + r)), so that a tie at the second
  // decimal rounds as it does there.
  const auto percent = [](std::int64_t part, std::int64_t whole) {
    return whole > 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0;
  };
  const auto fb1 = [](double p, double r) { return p + r > 0 ? 2 * p * r / (p + r) : 0.0; };
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "processed %lld tokens with %lld phrases; found: %lld phrases; correct: %lld.\n",
                static_cast<long long>(words), static_cast<long long>(overall.gold),
                static_cast<long long>(overall.predicted), static_cast<long long>(overall.correct));
  out += line;
  if (words > 0) {
    const double p = percent(overall.correct, overall.predicted), r = percent(overall.correct, overall.gold);
    std::snprintf(line, sizeof line, "accuracy: %6.2f%%; precision: %6.2f%%; recall: %6.2f%%; FB1: %6.2f\n",
                  percent(correct_words, words), p, r, fb1(p, r));
    out += line;
  }
  for (const auto& [type, c] : per_type) {
    const double p = percent(c.correct, c.predicted), r = percent(c.correct, c.gold);
    // "%17s: " with a type of any length
    std::string text = std::string(type.size() < 17 ? 17 - type.size() : 0, ' ') + type + ": ";
    std::snprintf(line, sizeof line, "precision: %6.2f%%; recall: %6.2f%%; FB1: %6.2f  %lld\n", p, r, fb1(p, r),
                  static_cast<long long>(c.predicted));
    text += line;
    out += text;
    if (type.empty() && untyped_in_both) out += text;
  }
  return out;
}

}  // namespace ctdl::metrics
