// io/bert_checkpoint.hpp: a BERT classifier loaded from a checkpoint with every tensor
// used or skipped with its reason, and every mismatch between the checkpoint, the config
// and labels.txt an error naming them (they used to corrupt the heap, load garbage, or
// drop tensors and labels silently).
#include <catch2/catch.hpp>

#include <ctdl/io/bert_checkpoint.hpp>
#include <ctdl/io/safetensors_writer.hpp>
#include <ctdl/models/bert/model.hpp>
#include <ctdl/precision/policy.hpp>

#include <map>
#include <string>
#include <vector>

#include "../test_util.hpp"

using namespace ctdl;
using F = bert::Family<32, 4, 64>;
using SeqModel = bert::BertForSequenceClassification<float, F, precision::Fp32>;
using TokModel = bert::BertForTokenClassification<float, F, precision::Fp32>;

namespace {

bert::BertConfig config(index_t layers) {
  bert::BertConfig c;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  c.num_hidden_layers = layers;
  c.max_position_embeddings = 16;
  return c;
}

struct Stored {
  std::string dtype = "F32";
  std::vector<index_t> shape;
  std::vector<float> values;
};

/// A checkpoint's tensors by name, to change before writing; also a tensor source of its
/// own (the duck-typed API the loaders use), standing in for a reader other than
/// SafetensorsFile (such as a TensorFlow checkpoint's).
struct Checkpoint {
  std::string file = "map.ckpt";
  std::map<std::string, Stored> tensors;

  template <class Model>
  static Checkpoint of(Model& m, const std::string& encoder_prefix = "bert.") {
    Checkpoint c;
    nn::visit_parameters(m, [&](const std::string& name, auto& p) {
      const auto& v = p.value();
      const std::string key = name.starts_with("bert.") ? encoder_prefix + name.substr(5) : name;
      c.tensors[key] = {"F32", {v.extents().begin(), v.extents().end()}, {v.data(), v.data() + v.size()}};
    });
    return c;
  }
  void set(const std::string& name, std::vector<index_t> shape, float fill = 0.25f) {
    index_t n = 1;
    for (auto d : shape) n *= d;
    tensors[name] = {"F32", shape, std::vector<float>(static_cast<std::size_t>(n), fill)};
  }
  /// Writes it as safetensors to <dir>/model.safetensors; returns the path.
  std::string write(const std::string& dir) const {
    io::SafetensorsWriter w;
    for (const auto& [name, t] : tensors)
      w.add(name, t.dtype, {t.shape.begin(), t.shape.end()}, t.values.data(), t.values.size() * sizeof(float));
    w.write(dir + "/model.safetensors");
    return dir + "/model.safetensors";
  }

  // ---- the tensor-source API ----
  struct Entry {
    std::string dtype;
    std::vector<index_t> shape;
  };
  const std::string& path() const { return file; }
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& [k, t] : tensors) v.push_back(k);
    return v;
  }
  bool contains(const std::string& n) const { return tensors.count(n) > 0; }
  Entry at(const std::string& n) const { return {tensors.at(n).dtype, tensors.at(n).shape}; }
  template <class T, class S>
  void read_into(const std::string& n, Tensor<T, S>& dst) const {
    const auto& t = tensors.at(n);
    REQUIRE(static_cast<std::size_t>(dst.size()) == t.values.size());
    std::copy(t.values.begin(), t.values.end(), dst.data());
  }
  template <class T, class S>
  Tensor<T, S> tensor(const std::string& n) const {
    const auto& t = tensors.at(n);
    std::array<index_t, S::rank> ext{};
    std::copy(t.shape.begin(), t.shape.end(), ext.begin());
    auto out = Tensor<T, S>(ext);
    read_into(n, out);
    return out;
  }
};

std::vector<std::string> labels(int n) {
  const std::vector<std::string> all = {"che", "dis", "ggp", "org", "out"};
  return {all.begin(), all.begin() + n};
}

struct Loaded {
  std::string error;
  std::vector<std::string> log;
  io::BertCheckpointReport report;
};

template <class Model, class Source>
Loaded load(Model& model, const Source& source, int num_labels, const std::string& phantom = "last") {
  Loaded r;
  try {
    r.report = io::load_bert_classifier(model, source,
                                        {.labels = labels(num_labels), .labels_file = "labels/labels.txt",
                                         .config_file = "bert_config.json", .phantom_class = phantom,
                                         .log = [&](const std::string& s) { r.log.push_back(s); }});
  } catch (const Error& e) {
    r.error = e.what();
  }
  return r;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

}  // namespace

TEST_CASE("bert checkpoint: a head of the labels' size loads, and every tensor is accounted for") {
  auto source = SeqModel::make(config(1), 5);
  bert::init_weights(source, 0.5, 3);
  auto ckpt = Checkpoint::of(source);
  ckpt.set("cls.predictions.bias", {40});
  ckpt.set("cls.predictions.transform.dense.weight", {32, 32});
  ckpt.set("cls.seq_relationship.weight", {2, 32});
  ckpt.set("bert.embeddings.position_ids", {1, 16});
  ckpt.set("qa_outputs.weight", {2, 32});
  const std::string dir = test::scratch_dir("io", "bert_checkpoint_ok");
  const io::SafetensorsFile file(ckpt.write(dir));
  auto model = SeqModel::make(config(1), 5);
  const auto r = load(model, file, 5);
  REQUIRE(r.error == "");
  CHECK(r.report.prefix == "bert.");
  CHECK(r.report.classifier_loaded);
  CHECK(!r.report.dropped_row);
  CHECK(model.classifier.weight.value().data()[77] == source.classifier.weight.value().data()[77]);
  CHECK(model.classifier.bias.value().data()[4] == source.classifier.bias.value().data()[4]);
  CHECK(model.bert.pooler.dense.weight.value().data()[9] == source.bert.pooler.dense.weight.value().data()[9]);
  // Loaded + skipped = every tensor of the file, each once.
  CHECK(r.report.loaded.size() + r.report.skipped.size() == file.names().size());
  std::map<std::string, std::string> reason;
  for (const auto& s : r.report.skipped) reason[s.name] = s.reason;
  CHECK(reason.size() == 5);
  CHECK_THAT(reason["cls.predictions.bias"], Catch::Contains("masked-LM pre-training head, not used by a classifier"));
  CHECK_THAT(reason["cls.seq_relationship.weight"], Catch::Contains("next-sentence pre-training head"));
  CHECK_THAT(reason["bert.embeddings.position_ids"], Catch::Contains("buffer of position indices"));
  CHECK_THAT(reason["qa_outputs.weight"], Catch::Contains("not a tensor of a BERT classifier"));
  const std::string log = joined(r.log);
  CHECK_THAT(log, Catch::Contains("skipped 2 tensors of " + file.path() +
                                  ", the masked-LM pre-training head, not used by a classifier: cls.predictions.bias, "
                                  "cls.predictions.transform.dense.weight"));
  CHECK_THAT(log, Catch::Contains("the encoder's tensors are named bert.*"));
}

TEST_CASE("bert checkpoint: a token classifier skips the pooler, saying why") {
  auto source = SeqModel::make(config(1), 3);
  const auto ckpt = Checkpoint::of(source);
  auto model = TokModel::make(config(1), 3);
  const auto r = load(model, ckpt, 3);
  REQUIRE(r.error == "");
  REQUIRE(r.report.skipped.size() == 2);
  CHECK(r.report.skipped[0].name == "bert.pooler.dense.bias");
  CHECK_THAT(r.report.skipped[0].reason, Catch::Contains("the pooler, which this model does not have"));
}

TEST_CASE("bert checkpoint: a bare BertModel's tensors (no bert. prefix) load") {
  auto source = SeqModel::make(config(1), 3);
  bert::init_weights(source, 0.5, 4);
  auto ckpt = Checkpoint::of(source, "");
  ckpt.tensors.erase("classifier.weight");
  ckpt.tensors.erase("classifier.bias");
  REQUIRE(ckpt.contains("embeddings.word_embeddings.weight"));
  REQUIRE(ckpt.contains("encoder.layer.0.attention.self.query.weight"));
  const io::SafetensorsFile file(ckpt.write(test::scratch_dir("io", "bert_checkpoint_bare")));
  auto model = SeqModel::make(config(1), 3);
  const auto r = load(model, file, 3);
  REQUIRE(r.error == "");
  CHECK(r.report.prefix == "");
  CHECK(!r.report.classifier_loaded);
  CHECK(r.report.skipped.empty());
  CHECK(model.bert.encoder.layer[0].attention.self.query.weight.value().data()[31] ==
        source.bert.encoder.layer[0].attention.self.query.weight.value().data()[31]);
  CHECK(model.bert.embeddings.word_embeddings.weight.value().data()[100] ==
        source.bert.embeddings.word_embeddings.weight.value().data()[100]);
  CHECK_THAT(joined(r.log), Catch::Contains("named without a prefix (a bare BertModel"));
  CHECK_THAT(joined(r.log), Catch::Contains("has no classifier (classifier.weight/bias): the classifier starts from random"));

  Checkpoint none;
  none.set("foo.weight", {2});
  CHECK_THAT(load(model, none, 3).error, Catch::StartsWith("map.ckpt: not a BERT checkpoint: it has neither bert.embeddings"));
}

TEST_CASE("bert checkpoint: a head of the wrong width or a bias of the wrong length is an error naming both shapes") {
  auto source = SeqModel::make(config(1), 5);
  auto model = SeqModel::make(config(1), 5);
  auto ckpt = Checkpoint::of(source);
  // One row more than the labels and too narrow: this corrupted the heap.
  ckpt.set("classifier.weight", {6, 16});
  ckpt.set("classifier.bias", {6});
  CHECK(load(model, ckpt, 5).error ==
        "map.ckpt: tensor \"classifier.weight\" has shape [6, 16], but the model's hidden size is 32 (hidden_size of "
        "bert_config.json): expected [6, 32]");
  ckpt.set("classifier.weight", {6, 48});
  CHECK_THAT(load(model, ckpt, 5).error, Catch::Contains("has shape [6, 48], but the model's hidden size is 32"));
  // The labels' row count but narrower: this loaded garbage.
  ckpt.set("classifier.weight", {5, 16});
  ckpt.set("classifier.bias", {5});
  CHECK_THAT(load(model, ckpt, 5).error, Catch::Contains("\"classifier.weight\" has shape [5, 16], but the model's hidden size is 32"));
  // A short bias: read out of bounds.
  ckpt.set("classifier.weight", {6, 32});
  ckpt.set("classifier.bias", {3});
  CHECK(load(model, ckpt, 5).error ==
        "map.ckpt: tensor \"classifier.bias\" has shape [3], but \"classifier.weight\" [6, 32] has 6 rows (expected [6])");
  ckpt.tensors.erase("classifier.bias");
  CHECK_THAT(load(model, ckpt, 5).error, Catch::Contains("has classifier.weight but no classifier.bias"));
}

TEST_CASE("bert checkpoint: labels.txt with 4 of the checkpoint's 5 labels (6 rows with the extra class) is an error") {
  auto source = SeqModel::make(config(1), 6);  // 5 labels + the phantom class
  auto model = SeqModel::make(config(1), 4);
  const auto r = load(model, Checkpoint::of(source), 4);
  // This used to drop a row and predict every class under another label's name.
  CHECK(r.error ==
        "map.ckpt: the classifier has 6 rows (classifier.weight [6, 32]), but labels/labels.txt has 4 labels: a "
        "classifier has a row per label, or one more (the original pipeline's unused extra class); 6 is neither 4 nor 5");
}

TEST_CASE("bert checkpoint: a checkpoint's own labels.txt must list the run's labels") {
  auto source = SeqModel::make(config(1), 5);
  const std::string dir = test::scratch_dir("io", "bert_checkpoint_labels");
  const io::SafetensorsFile file(Checkpoint::of(source).write(dir));
  std::ofstream(dir + "/labels.txt") << "che\ndis\nggp\norg\nxyz\n";
  auto model = SeqModel::make(config(1), 5);
  // Five rows, five labels: the row counts agree, the labels do not.
  CHECK(load(model, file, 5).error ==
        dir + "/labels.txt (beside the checkpoint " + file.path() +
            ") lists the labels che, dis, ggp, org, xyz, but labels/labels.txt lists che, dis, ggp, org, out: the "
            "classifier's rows stand for the checkpoint's labels; give its labels.txt");
  // The same labels in another order and with blank lines are the same labels.
  std::ofstream(dir + "/labels.txt") << "out\n\n  org \nggp\ndis\nche\n";
  CHECK(load(model, file, 5).error == "");
}

TEST_CASE("bert checkpoint: encoder layers beyond the config's are an error naming the config and the count") {
  auto source = SeqModel::make(config(2), 3);
  auto model = SeqModel::make(config(1), 3);
  const auto r = load(model, Checkpoint::of(source), 3);
  // This used to load layer 0 and drop layer 1's 16 tensors silently.
  CHECK(r.error ==
        "map.ckpt has 2 encoder layers (e.g. \"bert.encoder.layer.1.attention.output.LayerNorm.bias\"), but "
        "bert_config.json says num_hidden_layers 1: give the checkpoint's own bert_config.json (its layers past 1 would "
        "be dropped)");
  // Too few layers: the missing parameters are named.
  auto deep = SeqModel::make(config(2), 3);
  CHECK_THAT(load(deep, Checkpoint::of(model), 3).error,
             Catch::StartsWith("map.ckpt: 16 parameter(s) missing, e.g. \"bert.encoder.layer.1."));
}

TEST_CASE("bert checkpoint: with one row too many the phantom row is dropped, last by default or first") {
  auto source = SeqModel::make(config(1), 4);
  bert::init_weights(source, 0.5, 5);
  float* b = source.classifier.bias.value().data();
  b[0] = 0.3f, b[1] = -0.1f, b[2] = 0.05f, b[3] = -0.4f;  // as training leaves it: row 3 is the phantom
  const auto ckpt = Checkpoint::of(source);
  auto model = SeqModel::make(config(1), 3);
  auto r = load(model, ckpt, 3);
  REQUIRE(r.error == "");
  CHECK(r.report.dropped_row == 3);
  for (index_t i = 0; i < 3; ++i) CHECK(model.classifier.bias.value().data()[i] == b[i]);
  CHECK_THAT(joined(r.log), Catch::Contains("dropped row 3 of 0..3 (--phantom_class=last)"));
  CHECK_THAT(joined(r.log), !Catch::Contains("looks used"));
  r = load(model, ckpt, 3, "first");
  CHECK(r.report.dropped_row == 0);
  CHECK(model.classifier.bias.value().data()[0] == b[1]);
  CHECK(model.classifier.weight.value().data()[2 * 32 + 5] == source.classifier.weight.value().data()[3 * 32 + 5]);
  CHECK_THAT(joined(r.log), Catch::Contains("the dropped row 0 looks used: its bias is 0.3 > 0"));
}

TEST_CASE("bert checkpoint: the dropped row is checked, a row no label maps to only loses bias in training") {
  using io::phantom_row_doubt;
  const std::vector<float> trained = {0.3f, -0.1f, 0.05f, -0.4f};  // row 3 is the phantom
  CHECK(phantom_row_doubt(trained, 3).empty());
  const auto wrong = phantom_row_doubt(trained, 0);
  CHECK_THAT(wrong, Catch::Contains("the dropped row 0 looks used: its bias is 0.3 > 0"));
  CHECK_THAT(wrong, Catch::Contains("row 3 has the lowest bias (-0.4)"));
  const std::vector<float> first_is_phantom = {-0.5f, 0.2f, -0.1f, 0.1f};
  CHECK(phantom_row_doubt(first_is_phantom, 0).empty());
  const auto doubt = phantom_row_doubt(first_is_phantom, 3);
  CHECK_THAT(doubt, Catch::Contains("the dropped row 3 looks used: its bias is 0.1 > 0"));
  CHECK_THAT(doubt, Catch::Contains("row 0 has the lowest bias (-0.5)"));
  CHECK_THAT(phantom_row_doubt(std::vector<float>{0.1f, -0.5f, 0.2f, -0.2f}, 3),
             Catch::Contains("row 1 has a lower bias (-0.5 < -0.2)"));
  CHECK_THAT(phantom_row_doubt(first_is_phantom, 2), Catch::Contains("(--phantom_class=first drops it)"));
  // An untrained classifier (all biases 0) says nothing either way; ties are no doubt.
  CHECK(phantom_row_doubt(std::vector<float>(4, 0.0f), 3).empty());
  CHECK(phantom_row_doubt(std::vector<float>{-0.2f, 0.1f, -0.2f}, 2).empty());
}
