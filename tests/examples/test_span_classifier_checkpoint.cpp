// ner_span_classifier's checkpoint loading: the original pipeline's phantom extra class.
#include <catch2/catch.hpp>

#include "../../examples/span_classifier/run.hpp"

using namespace ctdl;
using F = bert::Family<32, 4, 64>;
using Model = bert::BertForSequenceClassification<float, F, precision::Fp32>;

namespace {
bert::BertConfig config() {
  bert::BertConfig c;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  c.num_hidden_layers = 1;
  c.max_position_embeddings = 16;
  return c;
}
}  // namespace

TEST_CASE("a checkpoint with one class too many loads with that row dropped") {
  auto source = Model::make(config(), 4);  // 3 labels + the phantom class
  bert::init_weights(source, 0.5, 11);
  const std::string path = std::string(CTDL_TEST_TMP) + "/phantom.safetensors";
  io::save_parameters(source, path);
  const data::LabelSet labels({"che", "dis", "out"});
  span_classifier::Setup s;
  s.labels = &labels;
  s.checkpoint_file = path;
  const index_t H = 32;
  for (const std::string which : {"first", "last"}) {
    s.args.phantom_class = which;
    auto model = Model::make(config(), 3);
    span_classifier::load_checkpoint(model, s);
    const index_t skip = which == "first" ? 0 : 3;
    for (index_t r = 0, out = 0; r < 4; ++r) {
      if (r == skip) continue;
      for (index_t h = 0; h < H; ++h)
        REQUIRE(model.classifier.weight.value().data()[out * H + h] == source.classifier.weight.value().data()[r * H + h]);
      CHECK(model.classifier.bias.value().data()[out] == source.classifier.bias.value().data()[r]);
      ++out;
    }
    // the encoder is loaded too
    CHECK(model.bert.encoder.layer[0].output.dense.weight.value().data()[5] ==
          source.bert.encoder.layer[0].output.dense.weight.value().data()[5]);
  }
  auto wrong = Model::make(config(), 2);
  const data::LabelSet two({"a", "b"});
  s.labels = &two;
  auto source5 = Model::make(config(), 5);
  io::save_parameters(source5, path);
  CHECK_THROWS_WITH(span_classifier::load_checkpoint(wrong, s), Catch::Contains("the classifier has 5 classes, labels.txt has 2"));
}
