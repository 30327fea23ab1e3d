// Parity with Hugging Face transformers: fixtures made by tools/make_fixtures.py hold a
// tiny random BERT (both GELU forms, sequence and token classification heads), a padded
// batch, and PyTorch's logits, loss and every parameter's gradient (float64, eval mode).
#include <catch2/catch.hpp>

#include <ctdl/io/parameters.hpp>
#include <ctdl/models/bert/model.hpp>
#include <ctdl/precision/policy.hpp>

#include "../../test_util.hpp"

using namespace ctdl;

namespace {

using Fam = bert::Family<32, 4, 64>;  // the fixtures' shape family

std::string fixture(const std::string& name) { return std::string(CTDL_FIXTURES_DIR) + "/" + name; }

Tensor<std::int32_t, Shape<dyn, dyn>> ints(const io::SafetensorsFile& f, const std::string& name) {
  auto t = f.tensor<std::int64_t, Shape<dyn, dyn>>(name);
  Tensor<std::int32_t, Shape<dyn, dyn>> out(t.extents());
  for (index_t i = 0; i < t.size(); ++i) out.data()[i] = static_cast<std::int32_t>(t.data()[i]);
  return out;
}

/// All elements of a fixture tensor, flattened, converted to double.
std::vector<double> flat(const io::SafetensorsFile& f, const std::string& name) {
  const auto& e = f.at(name);
  std::vector<double> v(e.bytes / 8);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (e.dtype == "F64") {
      double x;
      std::memcpy(&x, e.data + 8 * i, 8);
      v[i] = x;
    } else {
      std::int64_t x;
      std::memcpy(&x, e.data + 8 * i, 8);
      v[i] = static_cast<double>(x);
    }
  }
  return v;
}

/// Max |a - b| over a tensor, relative to max |b| — or to 1e-2 of the largest gradient
/// anywhere in the model (`scale`), whichever is larger: some gradients are exactly zero
/// in exact arithmetic (the attention key bias: softmax ignores a per-row constant), and
/// both implementations then hold only rounding noise, which scales with the model's
/// gradients, not with that tensor's.
template <class T, class S>
double relative_error(const Tensor<T, S>& a, const Tensor<double, S>& b, double scale) {
  double num = 0, den = 0;
  for (index_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(convert<double>(a.data()[i]) - b.data()[i]));
    den = std::max(den, std::abs(b.data()[i]));
  }
  return num / std::max(den, 1e-2 * scale);
}

template <class T, class Model>
void check(const std::string& file_name, double logit_tol, double grad_tol) {
  const io::SafetensorsFile f(fixture(file_name));
  const auto config = bert::BertConfig::from_json(nlohmann::json::parse(f.metadata().at("config")), file_name);
  const index_t num_labels = std::stol(f.metadata().at("num_labels"));
  auto model = Model::make(config, num_labels);
  const auto report = io::load_parameters(model, f);
  for (const auto& name : report.unused) {
    INFO(name);
    REQUIRE((name.starts_with("grad.") || name.starts_with("expected.") || name == "input_ids" ||
             name == "token_type_ids" || name == "attention_mask" || name == "labels"));
  }
  bert::Batch batch{ints(f, "input_ids"), ints(f, "token_type_ids"), ints(f, "attention_mask")};

  Tape tape;
  nn::Context ctx{tape};
  auto logits = model.forward(ctx, batch);
  const auto expected = flat(f, "expected.logits");  // B x C, or B x S x C for the token head
  const bool token_head = f.at("labels").shape.size() == 2;
  REQUIRE(logits.value().size() == static_cast<index_t>(expected.size()));
  REQUIRE(logits.extent(1) == num_labels);
  double max_diff = 0;
  for (std::size_t i = 0; i < expected.size(); ++i)
    max_diff = std::max(max_diff, std::abs(convert<double>(logits.value().data()[i]) - expected[i]));
  INFO(file_name << ": max |logit - reference| = " << max_diff);
  REQUIRE(max_diff <= logit_tol);

  // Loss as Hugging Face computes it: mean cross-entropy over labels != -100.
  const auto labels64 = flat(f, "labels");
  const auto n = static_cast<index_t>(labels64.size());
  Tensor<std::int32_t, Shape<dyn>> labels({n});
  Tensor<T, Shape<dyn>> mask({n});
  for (index_t i = 0; i < n; ++i) {
    labels.data()[i] = labels64[i] < 0 ? 0 : static_cast<std::int32_t>(labels64[i]);
    mask.data()[i] = labels64[i] < 0 ? T(0) : T(1);
  }
  auto loss = ops::cross_entropy(tape, logits, labels, mask);
  const double ref_loss = f.tensor<double, Shape<>>("expected.loss").item();
  INFO(file_name << ": loss " << convert<double>(loss.value().item()) << " reference " << ref_loss);
  REQUIRE(std::abs(convert<double>(loss.value().item()) - ref_loss) <= logit_tol);

  tape.backward(loss);
  double scale = 0;
  for (const auto& name : f.names())
    if (name.starts_with("grad."))
      for (double v : flat(f, name)) scale = std::max(scale, std::abs(v));
  int checked = 0;
  double worst_grad = 0;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    using S = typename std::remove_cvref_t<decltype(p)>::shape_type;
    auto ref = Tensor<double, S>::uninitialized(p.extents());
    f.read_into("grad." + name, ref);
    const double err = relative_error(p.grad(), ref, scale);
    INFO(file_name << ": gradient of " << name << " relative error " << err);
    worst_grad = std::max(worst_grad, err);
    REQUIRE(err <= grad_tol);
    ++checked;
  });
  REQUIRE(checked == 5 + 2 * 16 + (token_head ? 0 : 2) + 2);
  WARN(file_name << " [" << dtype_name<T>() << (std::is_same_v<typename Model::Policy, precision::Bf16Mixed> ? ", bf16 matmuls" : "")
                 << "]: max |logit diff| " << max_diff << ", worst gradient relative error " << worst_grad);
}

}  // namespace

TEST_CASE("Hugging Face parity in double: erf and tanh GELU, sequence and token heads") {
  check<double, bert::BertForSequenceClassification<double, Fam, precision::Fp32>>("bert_seq_gelu.safetensors", 1e-10, 1e-8);
  check<double, bert::BertForSequenceClassification<double, Fam, precision::Fp32>>("bert_seq_gelu_new.safetensors", 1e-10, 1e-8);
  check<double, bert::BertForTokenClassification<double, Fam, precision::Fp32>>("bert_tok_gelu.safetensors", 1e-10, 1e-8);
  check<double, bert::BertForTokenClassification<double, Fam, precision::Fp32>>("bert_tok_gelu_new.safetensors", 1e-10, 1e-8);
}

TEST_CASE("Hugging Face parity in fp32: logits within 1e-5, gradients within 1e-4 relative") {
  check<float, bert::BertForSequenceClassification<float, Fam, precision::Fp32>>("bert_seq_gelu.safetensors", 1e-5, 1e-4);
  check<float, bert::BertForSequenceClassification<float, Fam, precision::Fp32>>("bert_seq_gelu_new.safetensors", 1e-5, 1e-4);
  check<float, bert::BertForTokenClassification<float, Fam, precision::Fp32>>("bert_tok_gelu.safetensors", 1e-5, 1e-4);
  check<float, bert::BertForTokenClassification<float, Fam, precision::Fp32>>("bert_tok_gelu_new.safetensors", 1e-5, 1e-4);
}

TEST_CASE("safetensors: corrupt and missing files give clear errors") {
  REQUIRE_THROWS_WITH(io::SafetensorsFile("/nonexistent/model.safetensors"),
                      Catch::Matchers::Contains("/nonexistent/model.safetensors: cannot open"));
  const std::string bad = std::string(CTDL_TEST_TMP) + "/bad.safetensors";
  {
    std::ofstream out(bad, std::ios::binary);
    const unsigned char len[8] = {0xff, 0xff, 0, 0, 0, 0, 0, 0};
    out.write(reinterpret_cast<const char*>(len), 8);
    out << "{}";
  }
  REQUIRE_THROWS_WITH(io::SafetensorsFile(bad), Catch::Matchers::Contains("exceeds the file size"));
  {
    std::ofstream out(bad, std::ios::binary);
    const std::string h = R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})";
    unsigned char len[8] = {static_cast<unsigned char>(h.size()), 0, 0, 0, 0, 0, 0, 0};
    out.write(reinterpret_cast<const char*>(len), 8);
    out << h << std::string(12, '\0');
  }
  REQUIRE_THROWS_WITH(io::SafetensorsFile(bad), Catch::Matchers::Contains("tensor \"w\": data_offsets [0, 12] hold 12 bytes, but shape [2,2] of F32 needs 16"));
}

TEST_CASE("Hugging Face parity under Bf16Mixed: bf16 matmul inputs, fp32 everything else") {
  // bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%) on every matmul input;
  // through two layers the fixtures' logits (|logit| up to ~3) move by up to ~2e-2 and
  // gradients by a few percent of each tensor's scale. Tolerances: logits and loss
  // 5e-2 absolute, gradients 8e-2 relative (see docs/precision.md).
  using P = precision::Bf16Mixed;
  check<float, bert::BertForSequenceClassification<float, Fam, P>>("bert_seq_gelu.safetensors", 5e-2, 8e-2);
  check<float, bert::BertForSequenceClassification<float, Fam, P>>("bert_seq_gelu_new.safetensors", 5e-2, 8e-2);
  check<float, bert::BertForTokenClassification<float, Fam, P>>("bert_tok_gelu.safetensors", 5e-2, 8e-2);
  check<float, bert::BertForTokenClassification<float, Fam, P>>("bert_tok_gelu_new.safetensors", 5e-2, 8e-2);
}
