#include <catch2/catch.hpp>

#include <ctdl/models/bert/model.hpp>
#include <ctdl/precision/policy.hpp>

#include <fstream>

#include "../../test_util.hpp"

using namespace ctdl;

namespace {

/// A BERT of bert::Tiny's widths (hidden 128, 2 heads, intermediate 512), positions 16.
bert::BertConfig tiny_config(index_t vocab, index_t layers) {
  bert::BertConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 128;
  c.num_attention_heads = 2;
  c.intermediate_size = 512;
  c.num_hidden_layers = layers;
  c.max_position_embeddings = 16;
  return c;
}

}  // namespace

TEST_CASE("BERT-base with the cased BioBERT vocabulary has 108,310,272 parameters without heads") {
  bert::BertConfig c;  // BERT-base defaults
  c.vocab_size = 28996;
  auto model = bert::BertModel<float, bert::Base, precision::Fp32>::make(c);
  REQUIRE(nn::count_parameters(model) == 108310272);
  auto with_head = bert::BertForSequenceClassification<float, bert::Base, precision::Fp32>::make(c, 5);
  REQUIRE(nn::count_parameters(with_head) == 108310272 + 768 * 5 + 5);
}

TEST_CASE("BERT parameter names are the Hugging Face checkpoint keys") {
  bert::BertConfig c;
  c.vocab_size = 50;
  c.hidden_size = 128;
  c.num_attention_heads = 2;
  c.intermediate_size = 512;
  c.num_hidden_layers = 2;
  auto m = bert::BertForSequenceClassification<float, bert::Tiny, precision::Fp32>::make(c, 3);
  std::vector<std::string> names;
  nn::visit_parameters(m, [&](const std::string& n, auto&) { names.push_back(n); });
  REQUIRE(names.size() == 5 + 2 * 16 + 2 + 2);
  REQUIRE(names.front() == "bert.embeddings.word_embeddings.weight");
  REQUIRE(names[4] == "bert.embeddings.LayerNorm.bias");
  REQUIRE(names[5] == "bert.encoder.layer.0.attention.self.query.weight");
  REQUIRE(names[20] == "bert.encoder.layer.0.output.LayerNorm.bias");
  REQUIRE(names[21] == "bert.encoder.layer.1.attention.self.query.weight");
  REQUIRE(names[names.size() - 3] == "bert.pooler.dense.bias");
  REQUIRE(names.back() == "classifier.bias");
}

TEST_CASE("BertConfig: keys, defaults, and clear errors") {
  const auto j = nlohmann::json::parse(R"({"vocab_size": 99, "hidden_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 2, "intermediate_size": 512, "hidden_act": "gelu_new", "classifier_dropout": null,
    "hidden_dropout_prob": 0.2})");
  const auto c = bert::BertConfig::from_json(j, "cfg.json");
  REQUIRE(c.hidden_act == bert::Activation::gelu_tanh);
  REQUIRE(c.layer_norm_eps == 1e-12);
  REQUIRE(c.classifier_dropout == 0.2);
  REQUIRE(c.max_position_embeddings == 512);
  auto bad = j;
  bad.erase("hidden_size");
  REQUIRE_THROWS_WITH(bert::BertConfig::from_json(bad, "cfg.json"), "cfg.json: missing key \"hidden_size\"");
  bad = j;
  bad["hidden_act"] = "relu";
  REQUIRE_THROWS_WITH(bert::BertConfig::from_json(bad, "cfg.json"), Catch::Matchers::Contains("hidden_act \"relu\" is not supported"));
  bad = j;
  bad["num_hidden_layers"] = "three";
  REQUIRE_THROWS_WITH(bert::BertConfig::from_json(bad, "cfg.json"), Catch::Matchers::Contains("\"num_hidden_layers\" has the wrong type"));
  REQUIRE_THROWS_WITH(bert::BertConfig::from_file("/nonexistent/bert_config.json"),
                      "/nonexistent/bert_config.json: cannot open the BERT config");
  int matched = 0;
  bert::dispatch(c, [&]<class F>() { matched = static_cast<int>(F::hidden); });
  REQUIRE(matched == 128);
  auto odd = c;
  odd.hidden_size = 200;
  odd.num_attention_heads = 4;
  // A shape with no static family runs on the runtime-shaped one.
  bool dynamic = false;
  bert::dispatch(odd, [&]<class F>() { dynamic = F::is_dynamic; });
  REQUIRE(dynamic);
  bert::dispatch(c, [&]<class F>() { dynamic = F::is_dynamic; });
  REQUIRE_FALSE(dynamic);
}

TEST_CASE("BERT: initialisation and a forward/backward pass of a tiny model in double pass gradcheck on the head") {
  const bert::BertConfig c = tiny_config(30, 1);
  auto m = bert::BertForSequenceClassification<double, bert::Tiny, precision::Fp32>::make(c, 3);
  bert::init_weights(m, 0.02, 1);
  REQUIRE(m.bert.embeddings.LayerNorm.weight.value()(5) == 1.0);
  REQUIRE(m.bert.pooler.dense.bias.value()(5) == 0.0);
  double maxabs = 0;
  for (index_t i = 0; i < m.classifier.weight.value().size(); ++i) maxabs = std::max(maxabs, std::abs(m.classifier.weight.value().data()[i]));
  REQUIRE(maxabs <= 0.04);
  REQUIRE(maxabs > 0.0);
  bert::Batch batch{{{2, 4}, {5, 7, 9, 0, 3, 4, 5, 6}}, {{2, 4}, {0, 0, 1, 0, 0, 1, 1, 1}}, {{2, 4}, {1, 1, 1, 0, 1, 1, 1, 1}}};
  Tensor<std::int32_t, Shape<dyn>> labels({2}, {2, 0});
  // gradcheck on the classifier and the pooler through the whole network's forward.
  auto r = gradcheck(GradcheckOptions{.atol = 1e-8, .rtol = 1e-5}, [&](Tape& t, const auto& w, const auto& pw) {
    nn::Context ctx{t};
    (void)w;
    (void)pw;
    auto logits = m.forward(ctx, batch);
    return ops::cross_entropy(t, logits, labels);
  }, m.classifier.weight, m.bert.pooler.dense.bias);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("nn::to_device copies a model: every parameter, its flags, the layer vector and the config") {
  bert::BertConfig c = tiny_config(40, 2);
  c.layer_norm_eps = 1e-7;
  using M = bert::BertForSequenceClassification<float, bert::Tiny, precision::Fp32>;
  auto m = M::make(c, 3);
  bert::init_weights(m, 0.02, 5);
  m.bert.embeddings.word_embeddings.weight.set_weight_decay(false);
  auto copy = nn::to_device<M>(m);  // Cpu to Cpu: a deep copy (Cuda: tests/gpu/test_bert.cu)
  REQUIRE(copy.bert.encoder.layer.size() == 2);
  REQUIRE(copy.bert.config.layer_norm_eps == 1e-7);
  REQUIRE(copy.bert.encoder.layer[1].output.LayerNorm.eps == 1e-7);
  std::vector<const float*> originals;
  std::vector<std::vector<float>> values;
  std::vector<bool> decay;
  nn::visit_parameters(m, [&](const std::string&, auto& p) {
    originals.push_back(p.value().data());
    values.emplace_back(p.value().data(), p.value().data() + p.value().size());
    decay.push_back(p.weight_decay());
  });
  std::size_t i = 0;
  nn::visit_parameters(copy, [&](const std::string& name, auto& p) {
    INFO(name);
    REQUIRE(p.value().data() != originals[i]);  // its own storage
    REQUIRE(std::vector<float>(p.value().data(), p.value().data() + p.value().size()) == values[i]);
    REQUIRE(p.requires_grad());
    REQUIRE(p.weight_decay() == decay[i]);
    ++i;
  });
  REQUIRE(i == values.size());
  REQUIRE_FALSE(copy.bert.embeddings.word_embeddings.weight.weight_decay());
  REQUIRE_FALSE(copy.classifier.bias.weight_decay());
}

TEST_CASE("nn::copy_values loads a model's values in place, keeping its Vars, and names a mismatch") {
  const bert::BertConfig c = tiny_config(40, 2);
  using M = bert::BertForSequenceClassification<float, bert::Dynamic, precision::Fp32>;
  auto source = M::make(c, 3);
  bert::init_weights(source, 0.02, 5);
  auto m = M::make(c, 3);
  bert::init_weights(m, 0.02, 6);
  // What a gradient averager or ZeRO-1 holds: the Var objects' addresses and their nodes.
  std::vector<const void*> handles, nodes, storage;
  nn::visit_parameters(m, [&](const std::string&, auto& p) {
    handles.push_back(&p);
    nodes.push_back(p.node_ptr().get());
    storage.push_back(p.value().data());
  });
  const auto version_before = m.bert.encoder.layer[1].output.dense.weight.node_ptr()->version;
  nn::copy_values(m, source);
  std::vector<std::vector<float>> expected;
  nn::visit_parameters(source, [&](const std::string&, auto& p) {
    expected.emplace_back(p.value().data(), p.value().data() + p.value().size());
  });
  std::size_t i = 0;
  nn::visit_parameters(m, [&](const std::string& name, auto& p) {
    INFO(name);
    REQUIRE(static_cast<const void*>(&p) == handles[i]);
    REQUIRE(static_cast<const void*>(p.node_ptr().get()) == nodes[i]);
    REQUIRE(static_cast<const void*>(p.value().data()) == storage[i]);
    REQUIRE(std::vector<float>(p.value().data(), p.value().data() + p.value().size()) == expected[i]);
    ++i;
  });
  REQUIRE(i == expected.size());
  REQUIRE(m.bert.encoder.layer[1].output.dense.weight.node_ptr()->version > version_before);  // marked changed

  auto wider = c;
  wider.intermediate_size = 256;
  auto other = M::make(wider, 3);
  try {
    nn::copy_values(m, other);
    FAIL("a mismatched intermediate size was copied");
  } catch (const ShapeError& e) {
    REQUIRE_THAT(e.what(), Catch::Contains("bert.encoder.layer.0.intermediate.dense.weight"));
  }
  auto deeper = c;
  deeper.num_hidden_layers = 3;
  auto three = M::make(deeper, 3);
  REQUIRE_THROWS_WITH(nn::copy_values(m, three), Catch::Contains("bert.encoder.layer has 2 modules here but 3"));
}
