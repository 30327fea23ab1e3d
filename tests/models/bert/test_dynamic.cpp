#include <catch2/catch.hpp>

#include <ctdl/models/bert/model.hpp>
#include <ctdl/precision/policy.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "../../test_util.hpp"

// The runtime-shaped family bert::Dynamic against the static families: on a compiled
// shape both must compute the same bits (forward, loss, every parameter gradient), under
// every precision policy, with dropout on. Any kernel that took a different order of
// arithmetic for a static width (unrolled, vectorised, blocked by the constant) fails here.

using namespace ctdl;

// Named, not anonymous: test_unit_all compiles this file in one unit with others.
namespace dynamic_family_test {

bert::BertConfig tiny_shape_config() {
  bert::BertConfig c;
  c.vocab_size = 40;
  c.hidden_size = 128;  // bert::Tiny
  c.num_attention_heads = 2;
  c.intermediate_size = 512;
  c.num_hidden_layers = 2;
  c.max_position_embeddings = 16;
  c.hidden_dropout_prob = 0.1;
  c.attention_probs_dropout_prob = 0.1;
  c.classifier_dropout = 0.1;
  return c;
}

/// 3 sequences of 7 tokens, the last two padded.
bert::Batch test_batch() {
  using Ids = Tensor<std::int32_t, Shape<dyn, dyn>>;
  return {Ids({3, 7}, {2, 5, 9, 11, 30, 3, 1, 2, 7, 7, 39, 3, 0, 0, 2, 14, 3, 0, 0, 0, 0}),
          Ids({3, 7}, {0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
          Ids({3, 7}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0})};
}

/// The bytes of a training step: logits, loss, then every parameter's value and gradient
/// by name.
struct StepBytes {
  std::string logits, loss;
  std::vector<std::pair<std::string, std::string>> values, grads;
};

template <class T, class S>
std::string bytes_of(const Tensor<T, S>& t) {
  return std::string(reinterpret_cast<const char*>(t.data()), static_cast<std::size_t>(t.size()) * sizeof(T));
}

template <class F, class P>
StepBytes training_step(const bert::BertConfig& c) {
  auto model = bert::BertForSequenceClassification<float, F, P>::make(c, 3);
  bert::init_weights(model, c.initializer_range, 7);
  const auto batch = test_batch();
  const Tensor<std::int32_t, Shape<dyn>> labels({3}, {2, 0, 1});
  Tape tape;
  nn::Context ctx{tape, true, 42, 3};  // training: every dropout on, one seed
  auto logits = model.forward(ctx, batch);
  auto loss = ops::cross_entropy(tape, logits, labels);
  tape.backward(loss);
  StepBytes r{bytes_of(logits.value()), bytes_of(loss.value()), {}, {}};
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    r.values.emplace_back(name, bytes_of(p.value()));
    r.grads.emplace_back(name, bytes_of(p.grad()));
  });
  return r;
}

template <class P>
void require_same_bits() {
  const auto c = tiny_shape_config();
  const StepBytes fixed = training_step<bert::Tiny, P>(c);
  const StepBytes runtime = training_step<bert::Dynamic, P>(c);
  REQUIRE(fixed.logits.size() == 3 * 3 * sizeof(float));
  CHECK(std::memcmp(fixed.logits.data(), runtime.logits.data(), fixed.logits.size()) == 0);
  CHECK(fixed.loss == runtime.loss);
  REQUIRE(fixed.grads.size() == runtime.grads.size());
  REQUIRE(fixed.grads.size() == 5 + 2 * 16 + 2 + 2);
  for (std::size_t i = 0; i < fixed.grads.size(); ++i) {
    INFO(fixed.grads[i].first);
    REQUIRE(fixed.grads[i].first == runtime.grads[i].first);
    CHECK(fixed.values[i].second == runtime.values[i].second);  // same initialisation
    REQUIRE(fixed.grads[i].second.size() == runtime.grads[i].second.size());
    CHECK(std::memcmp(fixed.grads[i].second.data(), runtime.grads[i].second.data(), fixed.grads[i].second.size()) == 0);
  }
  // The gradients are not all zero (a step that computed nothing would also agree).
  bool any_nonzero = false;
  for (const auto& [name, g] : fixed.grads)
    for (char b : g) any_nonzero = any_nonzero || b != 0;
  REQUIRE(any_nonzero);
}

}  // namespace dynamic_family_test

using namespace dynamic_family_test;

TEST_CASE("bert::Dynamic: a training step is bit for bit the static family's (Tiny shape, Fp32)") {
  require_same_bits<precision::Fp32>();
}
TEST_CASE("bert::Dynamic: a training step is bit for bit the static family's (Tiny shape, Bf16Mixed)") {
  require_same_bits<precision::Bf16Mixed>();
}
TEST_CASE("bert::Dynamic: a training step is bit for bit the static family's (Tiny shape, Fp16Mixed)") {
  require_same_bits<precision::Fp16Mixed>();
}

TEST_CASE("bert::Dynamic: a shape with no static family (36/3/50, widths not multiples of 16) passes gradcheck") {
  bert::BertConfig c;
  c.vocab_size = 30;
  c.hidden_size = 36;
  c.num_attention_heads = 3;
  c.intermediate_size = 50;
  c.num_hidden_layers = 1;
  c.max_position_embeddings = 16;
  bool dynamic = false;
  bert::dispatch(c, [&]<class F>() { dynamic = F::is_dynamic; });
  REQUIRE(dynamic);
  auto m = bert::BertForSequenceClassification<double, bert::Dynamic, precision::Fp32>::make(c, 3);
  REQUIRE(nn::count_parameters(m) == c.parameter_count() + 36 * 3 + 3);
  REQUIRE(m.bert.encoder.layer[0].intermediate.dense.weight.extents() == std::array<index_t, 2>{50, 36});
  bert::init_weights(m, 0.02, 1);
  bert::Batch batch{{{2, 4}, {5, 7, 9, 0, 3, 4, 5, 6}}, {{2, 4}, {0, 0, 1, 0, 0, 1, 1, 1}}, {{2, 4}, {1, 1, 1, 0, 1, 1, 1, 1}}};
  Tensor<std::int32_t, Shape<dyn>> labels({2}, {2, 0});
  // Through the whole network: the query weights of the first layer (the heads' split of
  // the width, 12 columns each) and the intermediate layer's bias.
  const auto& layer = m.bert.encoder.layer[0];
  auto r = gradcheck(GradcheckOptions{.atol = 1e-8, .rtol = 1e-5}, [&](Tape& t, const auto&, const auto&) {
    nn::Context ctx{t};
    return ops::cross_entropy(t, m.forward(ctx, batch), labels);
  }, layer.attention.self.query.weight, layer.intermediate.dense.bias);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("bert::Dynamic: make() checks the sizes, naming the config's keys") {
  auto c = tiny_shape_config();
  c.source = "cfg.json";
  c.hidden_size = 130;
  c.num_attention_heads = 4;
  using M = bert::BertModel<float, bert::Dynamic, precision::Fp32>;
  REQUIRE_THROWS_WITH(M::make(c), Catch::Matchers::Contains("cfg.json: key \"hidden_size\" 130 is not a multiple of key "
                                                            "\"num_attention_heads\" 4"));
  c.hidden_size = 128;
  c.intermediate_size = 0;
  REQUIRE_THROWS_WITH(M::make(c), "cfg.json: key \"intermediate_size\" 0 must be positive");
  // A static family refuses a config of another shape, naming the keys and both shapes.
  c.intermediate_size = 500;
  REQUIRE_THROWS_WITH((bert::BertModel<float, bert::Tiny, precision::Fp32>::make(c)),
                      Catch::Matchers::Contains("cfg.json: keys \"hidden_size\"/\"num_attention_heads\"/\"intermediate_size\" "
                                                "are 128/4/500, but the model is of the compiled family 128/2/512"));
}
