#pragma once
// The learnable toy task the training tests share (train/test_classifier.cpp,
// train/test_loops.cpp, dist/mpi_data_parallel.cpp): 96 span rows whose label is decided
// by the span word, with noise words around it, through the real data path (TSV ->
// features -> cache), and the tiny BERT config that learns it.
#include <ctdl/data/feature_cache.hpp>
#include <ctdl/data/span_features.hpp>
#include <ctdl/models/bert/model.hpp>

#include <map>
#include <memory>
#include <string>

#include "../text_test_util.hpp"

namespace ctdl::test {

/// The toy rows' feature cache, made once per `name` (a file stem under CTDL_TEST_TMP:
/// processes that run at once, such as MPI ranks, pass different names).
inline const data::FeatureCache& toy_span_cache(const std::string& name) {
  static std::map<std::string, std::unique_ptr<data::FeatureCache>> caches;
  auto& c = caches[name];
  if (!c) {
    const char* spans[] = {"hello", "world", "effect"};
    const char* names[] = {"che", "dis", "out"};
    const char* noise[] = {"the", "of", "a b", "c", "d e"};
    std::string rows;
    for (int i = 0; i < 96; ++i)
      rows += std::string(names[i % 3]) + "\t" + noise[i % 5] + " " + noise[(i / 5) % 5] + "\t" + spans[i % 3] +
              "\t" + noise[(i / 3) % 5] + "\n";
    const auto tsv = write_file(name + ".tsv", rows);
    const data::LabelSet labels({"che", "dis", "out"});
    const data::SpanFeatureBuilder builder(tiny_tokenizer(), {.max_seq_length = 12});
    data::prepare_span_cache(tsv, tsv + ".features", labels, builder, tiny_tokenizer(), false);
    c = std::make_unique<data::FeatureCache>(tsv + ".features");
  }
  return *c;
}

/// A BERT of hidden 32, 4 heads, intermediate 64, 2 layers over the tiny vocabulary
/// (bert::Family<32, 4, 64>); without dropout when `dropout` is false.
inline bert::BertConfig toy_bert_config(bool dropout = true) {
  bert::BertConfig c;
  c.vocab_size = static_cast<index_t>(tiny_tokenizer().vocab().size());
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.max_position_embeddings = 16;
  if (!dropout) c.hidden_dropout_prob = c.attention_probs_dropout_prob = c.classifier_dropout = 0;
  return c;
}

}  // namespace ctdl::test
