// BertConfig: every value of bert_config.json is checked before anything is allocated,
// and every error names the file and the key.
#include <catch2/catch.hpp>

#include <ctdl/models/bert/config.hpp>

#include <fstream>
#include <regex>

using namespace ctdl;

namespace {
const auto kTiny = nlohmann::json::parse(R"({"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 1,
  "num_attention_heads": 2, "intermediate_size": 512, "max_position_embeddings": 64})");

std::string error_of(const nlohmann::json& j) {
  try {
    bert::BertConfig::from_json(j, "dir/bert_config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}
}  // namespace

TEST_CASE("BertConfig: non-integral, out-of-range and wrongly typed values are refused naming the key") {
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* message;  // a regex the whole message must match
  };
  const Case cases[] = {
      {"hidden_size", 128.9, R"(dir/bert_config.json: key "hidden_size" must be a whole number, not 128.9)"},
      {"vocab_size", 28996.5, R"(dir/bert_config.json: key "vocab_size" must be a whole number, not 28996.5)"},
      {"hidden_dropout_prob", 1.5, R"(.*key "hidden_dropout_prob" must be in \[0, 1\), not 1.5)"},
      {"hidden_dropout_prob", -0.5, R"(.*key "hidden_dropout_prob" must be in \[0, 1\), not -0.5)"},
      {"attention_probs_dropout_prob", 1.0, R"(.*key "attention_probs_dropout_prob" must be in \[0, 1\), not 1.0)"},
      {"classifier_dropout", 2, R"(.*key "classifier_dropout" must be in \[0, 1\), not 2.0)"},
      {"layer_norm_eps", -1, R"(.*key "layer_norm_eps" must be positive, not -1.0)"},
      {"layer_norm_eps", 0, R"(.*key "layer_norm_eps" must be positive, not 0.0)"},
      {"initializer_range", -0.02, R"(.*key "initializer_range" must not be negative, not -0.02)"},
      {"num_attention_heads", 3, R"(dir/bert_config.json: hidden_size 128 is not a multiple of num_attention_heads 3)"},
      {"vocab_size", 0, R"(.*key "vocab_size" must be positive, not 0)"},
      {"num_hidden_layers", -2, R"(.*key "num_hidden_layers" must be positive, not -2)"},
      {"type_vocab_size", -1.0, R"(.*key "type_vocab_size" must be positive, not -1)"},
      {"hidden_size", true, R"(.*key "hidden_size" has the wrong type \(true; a whole number is needed\))"},
      {"vocab_size", "28996", R"(.*key "vocab_size" has the wrong type \("28996"; a whole number is needed\))"},
      {"layer_norm_eps", "1e-12", R"(.*key "layer_norm_eps" has the wrong type \("1e-12"; a number is needed\))"},
      {"hidden_dropout_prob", nlohmann::json::array(), R"(.*key "hidden_dropout_prob" has the wrong type .*)"},
      {"max_position_embeddings", std::int64_t{1} << 55,
       R"(.*key "max_position_embeddings" must be at most 2147483647, not 36028797018963968)"},
      {"max_position_embeddings", 1e300, R"(.*key "max_position_embeddings" must be at most 2147483647, not 1e\+300)"},
      {"vocab_size", std::uint64_t{1} << 63, R"(.*key "vocab_size" must be at most 2147483647, not 9223372036854775808)"},
  };
  for (const auto& c : cases) {
    auto j = kTiny;
    j[c.key] = c.value;
    const auto message = error_of(j);
    INFO(c.key << " = " << c.value.dump() << " -> " << message);
    CHECK(std::regex_match(message, std::regex(c.message)));
  }
  // Whole numbers written as floats are whole numbers.
  auto j = kTiny;
  j["hidden_size"] = 128.0;
  CHECK(bert::BertConfig::from_json(j, "cfg.json").hidden_size == 128);
}

TEST_CASE("BertConfig: the parameter count is exact, overflow names the file, absurd sizes name the bytes") {
  auto j = kTiny;
  j["vocab_size"] = 28996;
  j["hidden_size"] = 768;
  j["num_attention_heads"] = 12;
  j["intermediate_size"] = 3072;
  j["num_hidden_layers"] = 12;
  j["max_position_embeddings"] = 512;
  // BERT-base with BioBERT's vocabulary: 108,310,272 parameters (test_model counts the modules).
  CHECK(bert::BertConfig::from_json(j, "cfg.json").parameter_count() == 108310272);

  auto huge = kTiny;
  huge["hidden_size"] = 2147483646;
  huge["intermediate_size"] = 2147483647;
  CHECK_THAT(error_of(huge), Catch::StartsWith("dir/bert_config.json: the parameter count overflows 64 bits"));

  auto big = kTiny;
  big["max_position_embeddings"] = 1e9;  // accepted as a number: 128e9 parameters, 512 GB
  const auto c = bert::BertConfig::from_json(big, "dir/bert_config.json");
  CHECK_NOTHROW(c.check_memory("dir/bert_config.json", std::uint64_t{1} << 40));
  CHECK_THROWS_WITH(c.check_memory("dir/bert_config.json", std::uint64_t{64} << 30),
                    Catch::Matches(R"(dir/bert_config.json: the model's 128003926784 fp32 parameters alone would need )"
                                   R"(512015707136 bytes \(476.9 GiB\); this machine has 68719476736 bytes \(64.0 GiB\). )"
                                   R"(Check key "max_position_embeddings" \(1000000000 x hidden_size 128\))"));
  // from_file checks against this machine's memory: a trillion-parameter model is refused before allocating.
  big["max_position_embeddings"] = 2000000000;
  big["hidden_size"] = 1024;
  big["num_attention_heads"] = 16;
  const std::string path = std::string(CTDL_TEST_TMP) + "/huge_bert_config.json";
  std::ofstream(path) << big.dump();
  CHECK_THROWS_WITH(bert::BertConfig::from_file(path), Catch::Contains("huge_bert_config.json: the model's") &&
                                                           Catch::Contains("bytes") &&
                                                           Catch::Contains("max_position_embeddings"));
}
