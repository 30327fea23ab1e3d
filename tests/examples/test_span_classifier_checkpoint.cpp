// ner_span_classifier's checkpoint loading: the original pipeline's phantom extra class
// (through run.hpp's load_checkpoint; the policy's own tests are tests/io/test_bert_checkpoint.cpp).
#include <catch2/catch.hpp>

#include "../../examples/span_classifier/run.hpp"
#include "../test_util.hpp"

using namespace ctdl;
using F = bert::Family<32, 4, 64>;
using Model = bert::BertForSequenceClassification<float, F, precision::Fp32>;

namespace {
bert::BertConfig checkpoint_config() {
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
  auto source = Model::make(checkpoint_config(), 4);  // 3 labels + the phantom class
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
    auto model = Model::make(checkpoint_config(), 3);
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
  auto wrong = Model::make(checkpoint_config(), 2);
  const data::LabelSet two({"a", "b"});
  s.labels = &two;
  auto source5 = Model::make(checkpoint_config(), 5);
  io::save_parameters(source5, path);
  CHECK_THROWS_WITH(span_classifier::load_checkpoint(wrong, s), Catch::Contains("the classifier has 5 rows (classifier.weight [5, 32]), but <labels> has 2 labels"));
}

TEST_CASE("by default the last classifier row is dropped, as the original numbers labels 0..L-1") {
  auto source = Model::make(checkpoint_config(), 4);
  bert::init_weights(source, 0.5, 12);
  // As training leaves it: the row no label maps to has the lowest bias, below 0.
  float* b = source.classifier.bias.value().data();
  b[0] = 0.3f, b[1] = -0.1f, b[2] = 0.05f, b[3] = -0.4f;
  const std::string path = std::string(CTDL_TEST_TMP) + "/phantom_default.safetensors";
  io::save_parameters(source, path);
  const data::LabelSet labels({"che", "dis", "out"});
  span_classifier::Setup s;  // --phantom_class not given
  s.labels = &labels;
  s.checkpoint_file = path;
  auto model = Model::make(checkpoint_config(), 3);
  span_classifier::load_checkpoint(model, s);
  for (index_t r = 0; r < 3; ++r) CHECK(model.classifier.bias.value().data()[r] == b[r]);
  CHECK(model.classifier.weight.value().data()[2 * 32 + 7] == source.classifier.weight.value().data()[2 * 32 + 7]);
}

TEST_CASE("a case flag that contradicts the vocabulary is a warning naming both") {
  using span_classifier::vocab_case_warning;
  const auto cased_vocab = text::Vocab::from_file(std::string(CTDL_FIXTURES_DIR) + "/tiny_vocab.txt");
  CHECK(vocab_case_warning(cased_vocab, true, "--cased=true").empty());
  const auto w = vocab_case_warning(cased_vocab, false, "--do_lower_case=true");
  CHECK_THAT(w, Catch::StartsWith("--do_lower_case=true lower-cases the text, but " + cased_vocab.source() +
                                  " is a cased vocabulary ("));
  CHECK_THAT(w, Catch::Contains("e.g. 'Hello', 'World'"));
  // Special tokens are upper-case in every vocabulary: they do not make it cased.
  const std::string uncased_path = std::string(CTDL_TEST_TMP) + "/uncased_vocab.txt";
  std::ofstream(uncased_path) << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n[unused1]\nhello\nworld\n##s\n";
  const auto uncased_vocab = text::Vocab::from_file(uncased_path);
  CHECK(vocab_case_warning(uncased_vocab, false, "--cased=false").empty());
  CHECK_THAT(vocab_case_warning(uncased_vocab, true, "--cased=true"),
             Catch::StartsWith("--cased=true keeps the case, but " + uncased_path + " has no token with a capital letter"));
}

TEST_CASE("a TensorFlow checkpoint loads under Google's names, its phantom row dropped") {
  // tests/fixtures/tf_checkpoint: the original pipeline's names, 4 labels + the phantom row.
  const std::string dir = std::string(CTDL_FIXTURES_DIR) + "/tf_checkpoint";
  const data::LabelSet labels({"che", "dis", "ggp", "out"});
  span_classifier::Setup s;
  s.labels = &labels;
  s.checkpoint_file = *io::find_tf_checkpoint(dir);
  s.checkpoint_is_tf = true;
  auto model = Model::make(bert::BertConfig::from_file(dir + "/bert_config.json"), 4);
  span_classifier::load_checkpoint(model, s);
  const io::TfCheckpoint tf(s.checkpoint_file);
  const auto w = tf.tensor<float, Shape<dyn, dyn>>("output_weights");  // [5, 32]
  const auto b = tf.tensor<float, Shape<dyn>>("output_bias");
  for (index_t r = 0; r < 4; ++r) {
    CHECK(model.classifier.bias.value().data()[r] == b.data()[r]);
    for (index_t h = 0; h < 32; ++h) REQUIRE(model.classifier.weight.value().data()[r * 32 + h] == w.data()[r * 32 + h]);
  }
  const auto kernel = tf.tensor<float, Shape<dyn, dyn>>("bert/encoder/layer_1/output/dense/kernel");  // [64, 32]: [in, out]
  const auto& weight = model.bert.encoder.layer[1].output.dense.weight.value();                         // [32, 64]: [out, in]
  for (index_t o = 0; o < 32; ++o)
    for (index_t i = 0; i < 64; ++i) REQUIRE(weight.data()[o * 64 + i] == kernel.data()[i * 32 + o]);
}

TEST_CASE("a model run with the tanh GELU is saved with \"gelu_new\" in its config, so that it reloads the same") {
  const std::string fixtures = CTDL_FIXTURES_DIR;
  const std::string dir = std::string(CTDL_TEST_TMP) + "/tanh_saved";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  io::write_file_atomically(dir + "/labels_in.txt", "che\ndis\nggp\nout\n");
  const auto labels = data::LabelSet::from_file(dir + "/labels_in.txt");
  span_classifier::Setup s;
  s.labels = &labels;
  s.args.bert_config_file = fixtures + "/tf_checkpoint/bert_config.json";  // says "gelu" (erf, read as Hugging Face's)
  s.args.vocab_file = fixtures + "/tiny_vocab.txt";
  s.args.output_dir = dir + "/out";  // where saved_config keeps a changed config, pending
  std::filesystem::create_directories(s.args.output_dir);
  s.config = bert::BertConfig::from_file(s.args.bert_config_file);
  auto model = Model::make(s.config, 4);
  s.config.hidden_act = bert::Activation::gelu_tanh;  // as for weights from a TensorFlow checkpoint
  {
    const auto saved = span_classifier::saved_config(s);
    REQUIRE(saved.pending);  // pending beside, not in place of, out/bert_config.json
    CHECK(saved.file == s.args.output_dir + "/bert_config.json.pending.tmp." + std::to_string(::getpid()));
    CHECK(!std::filesystem::exists(s.args.output_dir + "/bert_config.json"));
    span_classifier::save_model(model, s, dir + "/a", 1, saved.file);
  }
  CHECK(std::filesystem::is_empty(s.args.output_dir));  // the pending copy is gone with it
  CHECK(bert::BertConfig::from_file(dir + "/a/bert_config.json").hidden_act == bert::Activation::gelu_tanh);
  CHECK(nlohmann::json::parse(test::read_file(dir + "/a/bert_config.json"))["hidden_act"] == "gelu_new");
  s.config.hidden_act = bert::Activation::gelu_erf;  // as the config says: copied unchanged
  const auto same = span_classifier::saved_config(s);
  CHECK(same.file == s.args.bert_config_file);
  CHECK(!same.pending);
  span_classifier::save_model(model, s, dir + "/b", 1, same.file);
  CHECK(test::read_file(dir + "/b/bert_config.json") == test::read_file(s.args.bert_config_file));
}
