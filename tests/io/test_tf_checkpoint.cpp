// TensorFlow 1.x checkpoints: the reader against a checkpoint that TensorFlow's own Saver
// wrote (tests/fixtures/tf_checkpoint, made by tools/make_tf_fixture.py), corrupted
// copies of it, hand-built index tables, the Google -> Hugging Face name mapping, and a
// BERT loaded from the checkpoint against TensorFlow's logits (a sequence classifier, and
// the TensorFlow run_ner.py's token classifier from tests/fixtures/tf_ner_checkpoint).
#include <catch2/catch.hpp>

#include <ctdl/io/bert_tf_checkpoint.hpp>
#include <ctdl/io/parameters.hpp>
#include <ctdl/models/bert/model.hpp>
#include <ctdl/precision/policy.hpp>

#include <filesystem>
#include <fstream>

#include "../test_util.hpp"

using namespace ctdl;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

// Everything in a named namespace: test_unit_all compiles several test files as one unit.
namespace tf_checkpoint_test {
namespace {

using Fam = bert::Family<32, 4, 64>;  // the fixture's shape family (tools/make_tf_fixture.py)
using Model = bert::BertForSequenceClassification<float, Fam, precision::Fp32>;

const std::string kDir = std::string(CTDL_FIXTURES_DIR) + "/tf_checkpoint";
const std::string kPrefix = kDir + "/model.ckpt-7";

nlohmann::json expected() {
  return nlohmann::json::parse(test::read_file(kDir + "/expected.json"));
}

/// A copy of the fixture checkpoint in a scratch directory; returns the new prefix.
std::string copy_fixture(const std::string& name) {
  const std::string dir = test::scratch_dir("tf_checkpoint", name);
  for (const char* f : {"model.ckpt-7.index", "model.ckpt-7.data-00000-of-00001", "checkpoint"})
    fs::copy_file(kDir + "/" + f, dir + "/" + f);
  return dir + "/model.ckpt-7";
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// ---- a minimal SSTable writer, to build index files with chosen entries -------------

void put_varint(std::string& s, std::uint64_t v) {
  while (v >= 0x80) {
    s += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  s += static_cast<char>(v);
}
void put_fixed32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}

/// One block (no prefix compression, one restart) with its trailer appended to `file`;
/// returns its handle.
std::pair<std::uint64_t, std::uint64_t> add_block(std::string& file, const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string b;
  for (const auto& [k, v] : kv) {
    put_varint(b, 0);
    put_varint(b, k.size());
    put_varint(b, v.size());
    b += k;
    b += v;
  }
  put_fixed32(b, 0);
  put_fixed32(b, 1);
  const std::uint64_t offset = file.size();
  file += b;
  const unsigned char type = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  file += static_cast<char>(type);
  put_fixed32(file, io::crc32c_mask(io::crc32c_extend(io::crc32c(p, b.size()), &type, 1)));
  return {offset, b.size()};
}

/// An index file: one data block holding `kv` (sorted), an empty metaindex, the index block, the footer.
std::string make_index(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string file;
  const auto data = add_block(file, kv);
  const auto meta = add_block(file, {});
  std::string handle;
  put_varint(handle, data.first);
  put_varint(handle, data.second);
  const auto index = add_block(file, {{kv.back().first + "~", handle}});
  std::string footer;
  put_varint(footer, meta.first);
  put_varint(footer, meta.second);
  put_varint(footer, index.first);
  put_varint(footer, index.second);
  footer.resize(40, '\0');
  for (int i = 0; i < 8; ++i) footer += static_cast<char>((0xdb4775248b80fb57ull >> (8 * i)) & 0xff);
  return file + footer;
}

std::string header_proto(int shards) {
  std::string h;
  put_varint(h, (1 << 3) | 0);
  put_varint(h, static_cast<std::uint64_t>(shards));
  return h;
}

std::string entry_proto(int dtype, std::vector<std::int64_t> shape, std::uint64_t offset, std::uint64_t size) {
  std::string e, s;
  put_varint(e, (1 << 3) | 0);
  put_varint(e, static_cast<std::uint64_t>(dtype));
  for (auto d : shape) {
    std::string dim;
    put_varint(dim, (1 << 3) | 0);
    put_varint(dim, static_cast<std::uint64_t>(d));
    put_varint(s, (2 << 3) | 2);
    put_varint(s, dim.size());
    s += dim;
  }
  put_varint(e, (2 << 3) | 2);
  put_varint(e, s.size());
  e += s;
  put_varint(e, (4 << 3) | 0);
  put_varint(e, offset);
  put_varint(e, (5 << 3) | 0);
  put_varint(e, size);
  put_varint(e, (99 << 3) | 2);  // an unknown field, to be skipped
  put_varint(e, 3);
  e += "xyz";
  return e;
}

io::TfCheckpoint::Index parse(const std::string& bytes, const std::string& name = "test.index") {
  return io::TfCheckpoint::parse_index(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), name);
}

bert::Batch batch_of(const nlohmann::json& b) {
  const auto ints = [](const nlohmann::json& rows) {
    const auto B = static_cast<index_t>(rows.size()), S = static_cast<index_t>(rows[0].size());
    Tensor<std::int32_t, Shape<dyn, dyn>> t({B, S});
    for (index_t i = 0; i < B; ++i)
      for (index_t j = 0; j < S; ++j) t.data()[i * S + j] = rows[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)].get<std::int32_t>();
    return t;
  };
  return {ints(b["input_ids"]), ints(b["token_type_ids"]), ints(b["input_mask"])};
}

/// Max |ctdl's logits - TensorFlow's| over every fixture batch; `logits_out` collects ctdl's.
double max_logit_diff(const Model& model, std::vector<float>* logits_out = nullptr) {
  double worst = 0;
  const auto fixture = expected();  // kept: a range-for over expected()["batches"] would dangle
  REQUIRE(fixture["batches"].size() == 3);
  for (const auto& b : fixture["batches"]) {
    Tape tape;
    nn::Context ctx{tape};
    const auto logits = model.forward(ctx, batch_of(b));
    const auto& want = b["logits"];
    REQUIRE(logits.extent(0) == static_cast<index_t>(want.size()));
    REQUIRE(logits.extent(1) == static_cast<index_t>(want[0].size()));
    for (index_t i = 0; i < logits.extent(0); ++i)
      for (index_t j = 0; j < logits.extent(1); ++j) {
        const float got = logits.value().data()[i * logits.extent(1) + j];
        if (logits_out) logits_out->push_back(got);
        worst = std::max(worst, std::abs(static_cast<double>(got) - want[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)].get<double>()));
      }
  }
  return worst;
}

bert::BertConfig tanh_config() {
  auto config = bert::BertConfig::from_file(kDir + "/bert_config.json");
  config.hidden_act = bert::Activation::gelu_tanh;  // modeling.py's "gelu"
  return config;
}

}  // namespace

TEST_CASE("crc32c: the Castagnoli check value and LevelDB's masking") {
  const std::string s = "123456789";
  REQUIRE(io::crc32c(reinterpret_cast<const unsigned char*>(s.data()), s.size()) == 0xe3069283u);
  REQUIRE(io::crc32c(nullptr, 0) == 0);
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  REQUIRE(io::crc32c_extend(io::crc32c(p, 4), p + 4, 5) == 0xe3069283u);
  for (std::uint32_t v : {0u, 1u, 0xe3069283u, 0xffffffffu}) {
    REQUIRE(io::crc32c_unmask(io::crc32c_mask(v)) == v);
    REQUIRE(io::crc32c_mask(v) != v);
  }
}

TEST_CASE("TfCheckpoint lists every tensor TensorFlow saved, with its dtype and shape") {
  const io::TfCheckpoint ckpt(kPrefix);
  const auto tensors = expected().at("tensors");
  REQUIRE(ckpt.names().size() == tensors.size());
  REQUIRE(ckpt.names().size() == 3 * 41 + 1);  // 41 variables, their two Adam slots, global_step
  for (const auto& [name, info] : tensors.items()) {
    INFO(name);
    REQUIRE(ckpt.contains(name));
    const auto& e = ckpt.at(name);
    REQUIRE(e.dtype == (info["dtype"] == "float32" ? "F32" : info["dtype"] == "int64" ? "I64" : "?"));
    REQUIRE(e.shape == info["shape"].get<std::vector<index_t>>());
    REQUIRE(e.shard == 0);
  }
  REQUIRE(ckpt.num_shards() == 1);
  REQUIRE(ckpt.tensor<std::int64_t, Shape<>>("global_step").item() == 7);
  const auto w = ckpt.tensor<float, Shape<dyn, dyn>>("output_weights");
  REQUIRE(w.extent(0) == 5);
  REQUIRE(w.extent(1) == 32);
  // Conversion on read: the same tensor as double equals the float values.
  const auto wd = ckpt.tensor<double, Shape<dyn, dyn>>("output_weights");
  for (index_t i = 0; i < w.size(); ++i) REQUIRE(wd.data()[i] == static_cast<double>(w.data()[i]));
  REQUIRE_THROWS_WITH(ckpt.at("nope"), Contains("model.ckpt-7.index: no tensor \"nope\""));
  Tensor<float, Shape<dyn, dyn>> wrong({32, 5});
  REQUIRE_THROWS_WITH(ckpt.read_into("output_weights", wrong), Contains("\"output_weights\" [5, 32] does not match"));
}

TEST_CASE("TfCheckpoint reads float64, float16, bfloat16, int32, int64 and scalars as TensorFlow saved them") {
  const io::TfCheckpoint ckpt(kDir + "/dtypes.ckpt");
  const auto want = nlohmann::json::parse(test::read_file(kDir + "/dtypes.json"));
  REQUIRE(ckpt.names().size() == want.size());
  const std::map<std::string, std::string> dtype_of = {{"float64", "F64"}, {"float16", "F16"}, {"bfloat16", "BF16"},
                                                       {"int32", "I32"},   {"int64", "I64"},   {"float32", "F32"}};
  for (const auto& [name, info] : want.items()) {
    INFO(name);
    const auto& e = ckpt.at(name);
    REQUIRE(e.dtype == dtype_of.at(info["dtype"].get<std::string>()));
    REQUIRE(e.shape == info["shape"].get<std::vector<index_t>>());
    const auto values = info["values"].get<std::vector<double>>();
    Tensor<double, Shape<dyn>> flat({static_cast<index_t>(values.size())});
    // Read through a rank-matching tensor, then compare flat (every stored value is exact in double).
    if (e.shape.size() == 2) {
      auto t = ckpt.tensor<double, Shape<dyn, dyn>>(name);
      std::copy_n(t.data(), t.size(), flat.data());
    } else if (e.shape.size() == 1) {
      flat = ckpt.tensor<double, Shape<dyn>>(name);
    } else {
      flat.data()[0] = ckpt.tensor<double, Shape<>>(name).item();
    }
    for (std::size_t i = 0; i < values.size(); ++i) REQUIRE(flat.data()[i] == values[i]);
  }
  REQUIRE(ckpt.tensor<std::int64_t, Shape<dyn>>("i64").data()[0] == -(std::int64_t{1} << 62));
  REQUIRE(ckpt.tensor<std::int32_t, Shape<dyn, dyn>>("i32").data()[0] == std::numeric_limits<std::int32_t>::min());
  // Narrowing on read: bfloat16 and float16 widen to float exactly.
  const auto bf = ckpt.tensor<float, Shape<dyn>>("bf16");
  REQUIRE(bf.data()[1] == -3.140625f);
  REQUIRE(ckpt.tensor<float, Shape<dyn>>("f16").data()[1] == -65504.0f);
}

TEST_CASE("TfCheckpoint: corrupt files give errors naming the file and the tensor") {
  SECTION("a flipped byte in a tensor's data: CRC mismatch on read, naming the data file and tensor") {
    const std::string prefix = copy_fixture("flip_data");
    const io::TfCheckpoint clean(prefix);
    const auto& e = clean.at("bert/pooler/dense/kernel");
    std::string data = test::read_file(prefix + ".data-00000-of-00001");
    data[e.offset + 17] = static_cast<char>(data[e.offset + 17] ^ 0x40);
    write_bytes(prefix + ".data-00000-of-00001", data);
    const io::TfCheckpoint ckpt(prefix);
    REQUIRE_NOTHROW(ckpt.bytes("bert/pooler/dense/bias"));
    REQUIRE_THROWS_WITH(ckpt.bytes("bert/pooler/dense/kernel"),
                        Contains(prefix + ".data-00000-of-00001: tensor \"bert/pooler/dense/kernel\": CRC-32C mismatch"));
    Tensor<float, Shape<dyn, dyn>> t({32, 32});
    REQUIRE_THROWS_WITH(ckpt.read_into("bert/pooler/dense/kernel", t), Contains("CRC-32C mismatch"));
  }
  SECTION("a truncated data file: the tensors past its end are named at open") {
    const std::string prefix = copy_fixture("truncated_data");
    fs::resize_file(prefix + ".data-00000-of-00001", 1000);
    REQUIRE_THROWS_WITH(io::TfCheckpoint(prefix), Contains(prefix + ".data-00000-of-00001: tensor \"") &&
                                                      Contains("lies past the end of the file (1000 bytes; truncated?)"));
  }
  SECTION("a missing data shard") {
    const std::string prefix = copy_fixture("missing_shard");
    fs::remove(prefix + ".data-00000-of-00001");
    REQUIRE_THROWS_WITH(io::TfCheckpoint(prefix), Contains(prefix + ".data-00000-of-00001: cannot open") &&
                                                      Contains("the data shard of tensor \"bert/embeddings/LayerNorm/beta\""));
  }
  SECTION("a missing index") {
    REQUIRE_THROWS_WITH(io::TfCheckpoint(kDir + "/model.ckpt-8"), Contains("model.ckpt-8.index: cannot open"));
  }
  SECTION("bad magic, a truncated index, a corrupt block") {
    const std::string prefix = copy_fixture("index");
    const std::string index = test::read_file(prefix + ".index");
    std::string bad = index;
    bad[bad.size() - 1] = 0;
    write_bytes(prefix + ".index", bad);
    REQUIRE_THROWS_WITH(io::TfCheckpoint(prefix), Contains(prefix + ".index: bad magic number"));
    write_bytes(prefix + ".index", index.substr(0, index.size() - 100));
    REQUIRE_THROWS_WITH(io::TfCheckpoint(prefix), Contains(prefix + ".index: bad magic number"));
    write_bytes(prefix + ".index", index.substr(0, 20));
    REQUIRE_THROWS_WITH(io::TfCheckpoint(prefix), Contains(prefix + ".index: 20 bytes, too short"));
    bad = index;
    bad[100] = static_cast<char>(bad[100] ^ 1);  // inside the data block
    write_bytes(prefix + ".index", bad);
    REQUIRE_THROWS_WITH(io::TfCheckpoint(prefix), Contains(prefix + ".index: data block (offset 0") && Contains("CRC-32C mismatch"));
    // The index block's handle pointing past the blocks (footer bytes 2..: offset, size varints).
    bad = index;
    const std::size_t footer = bad.size() - 48;
    std::string f;
    put_varint(f, 0);
    put_varint(f, 0);
    put_varint(f, 1u << 20);
    put_varint(f, 10);
    f.resize(40, '\0');
    bad.replace(footer, 40, f);
    write_bytes(prefix + ".index", bad);
    REQUIRE_THROWS_WITH(io::TfCheckpoint(prefix), Contains(prefix + ".index: index block (offset 1048576, 10 bytes) lies outside"));
  }
}

TEST_CASE("TfCheckpoint::parse_index: entries built by hand") {
  SECTION("a well-formed table with an unknown field in an entry") {
    const auto idx = parse(make_index({{"", header_proto(2)}, {"a", entry_proto(1, {2, 3}, 0, 24)}, {"b", entry_proto(19, {}, 24, 2)}}));
    REQUIRE(idx.num_shards == 2);
    REQUIRE(idx.entries.at("a").dtype == "F32");
    REQUIRE(idx.entries.at("a").shape == std::vector<index_t>{2, 3});
    REQUIRE(idx.entries.at("b").dtype == "F16");
    REQUIRE(idx.entries.at("b").shape.empty());
  }
  SECTION("size and shape disagree") {
    REQUIRE_THROWS_WITH(parse(make_index({{"", header_proto(1)}, {"w", entry_proto(1, {2, 3}, 0, 20)}})),
                        Contains("test.index: tensor \"w\": 20 bytes for a F32 tensor of shape [2, 3]"));
    // Extents whose product overflows 64 bits are a mismatch, not a wrap-around.
    REQUIRE_THROWS_WITH(parse(make_index({{"", header_proto(1)}, {"w", entry_proto(1, {1ll << 40, 1ll << 40}, 0, 0)}})),
                        Contains("tensor \"w\": 0 bytes"));
  }
  SECTION("unknown dtype") {
    REQUIRE_THROWS_WITH(parse(make_index({{"", header_proto(1)}, {"w", entry_proto(23, {2}, 0, 8)}})),
                        Contains("test.index: tensor \"w\": unknown TensorFlow dtype 23"));
  }
  SECTION("no header, a shard out of range, a truncated field") {
    REQUIRE_THROWS_WITH(parse(make_index({{"w", entry_proto(1, {2}, 0, 8)}})), Contains("test.index: no header entry"));
    std::string e = entry_proto(1, {2}, 0, 8);
    put_varint(e, (3 << 3) | 0);
    put_varint(e, 1);
    REQUIRE_THROWS_WITH(parse(make_index({{"", header_proto(1)}, {"w", e}})), Contains("tensor \"w\" is in shard 1 of 1"));
    std::string cut = entry_proto(1, {2}, 0, 8);
    cut += static_cast<char>((2 << 3) | 2);
    cut += static_cast<char>(50);  // a 50-byte shape with no bytes left
    REQUIRE_THROWS_WITH(parse(make_index({{"", header_proto(1)}, {"w", cut}})), Contains("tensor \"w\"") && Contains("runs past the end"));
  }
  SECTION("a snappy-compressed block is refused, saying why") {
    std::string file = make_index({{"", header_proto(1)}});
    // Rewrite the data block's type byte to 1 and its CRC to match (so only the type is wrong).
    std::string block;
    put_fixed32(block, 0);
    put_fixed32(block, 1);
    std::string kv;
    put_varint(kv, 0);
    put_varint(kv, 0);
    put_varint(kv, header_proto(1).size());
    kv += header_proto(1);
    const std::string contents = kv + block;
    const unsigned char type = 1;
    file[contents.size()] = 1;
    std::string crc;
    put_fixed32(crc, io::crc32c_mask(io::crc32c_extend(io::crc32c(reinterpret_cast<const unsigned char*>(contents.data()), contents.size()), &type, 1)));
    file.replace(contents.size() + 1, 4, crc);
    REQUIRE_THROWS_WITH(parse(file), Contains("is snappy-compressed"));
  }
}

TEST_CASE("Google -> Hugging Face BERT names") {
  const auto check = [](const std::string& g, const std::string& hf, bool transpose) {
    INFO(g);
    const auto m = io::map_google_bert_name(g);
    REQUIRE(m.name == hf);
    REQUIRE(m.transpose == transpose);
    REQUIRE(m.skip_reason.empty());
  };
  check("bert/embeddings/word_embeddings", "bert.embeddings.word_embeddings.weight", false);
  check("bert/embeddings/token_type_embeddings", "bert.embeddings.token_type_embeddings.weight", false);
  check("bert/embeddings/LayerNorm/gamma", "bert.embeddings.LayerNorm.weight", false);
  check("bert/embeddings/LayerNorm/beta", "bert.embeddings.LayerNorm.bias", false);
  check("bert/encoder/layer_0/attention/self/query/kernel", "bert.encoder.layer.0.attention.self.query.weight", true);
  check("bert/encoder/layer_11/attention/self/value/bias", "bert.encoder.layer.11.attention.self.value.bias", false);
  check("bert/encoder/layer_3/attention/output/dense/kernel", "bert.encoder.layer.3.attention.output.dense.weight", true);
  check("bert/encoder/layer_3/attention/output/LayerNorm/gamma", "bert.encoder.layer.3.attention.output.LayerNorm.weight", false);
  check("bert/encoder/layer_23/intermediate/dense/kernel", "bert.encoder.layer.23.intermediate.dense.weight", true);
  check("bert/encoder/layer_1/output/dense/bias", "bert.encoder.layer.1.output.dense.bias", false);
  check("bert/encoder/layer_1/output/LayerNorm/beta", "bert.encoder.layer.1.output.LayerNorm.bias", false);
  check("bert/pooler/dense/kernel", "bert.pooler.dense.weight", true);
  check("output_weights", "classifier.weight", false);
  check("output_bias", "classifier.bias", false);
  const auto skipped = [](const std::string& g, const std::string& why) {
    INFO(g);
    const auto m = io::map_google_bert_name(g);
    REQUIRE(m.skipped());
    REQUIRE_THAT(m.skip_reason, Contains(why));
  };
  skipped("bert/encoder/layer_0/output/dense/kernel/adam_m", "optimizer state");
  skipped("output_bias/adam_v", "optimizer state");
  skipped("bert/pooler/dense/bias/Adam_1", "optimizer state");
  // NVIDIA's optimization.py: AdamWeightDecayOptimizerV2's slots, gradient accumulation,
  // the fp16 loss scale (tf.contrib's and tf.train.experimental's).
  for (const char* g : {"bert/encoder/layer_0/output/dense/kernel/AdamWeightDecayOptimizer",
                        "output_weights/AdamWeightDecayOptimizer_1", "bert/embeddings/word_embeddings/accum", "local_step",
                        "batch_finite", "loss_scale", "current_loss_scale", "good_steps", "bad_steps"})
    skipped(g, "optimizer state");
  skipped("bert/encoder/layer_2/attention/self/query/kernel/shadow", "master copy");
  CHECK_FALSE(io::map_google_bert_name("bert/encoder/layer_2/attention/self/query/kernel/shadow").skip_reason.starts_with("optimizer state"));
  skipped("global_step", "step counter");
  skipped("cls/predictions/output_bias", "pre-training head");
  for (const char* g : {"bert/encoder/layer_0/attention/self/query/gamma", "bert/encoder/layer_x/output/dense/bias",
                        "bert/encoder/layer_01/output/dense/bias", "bert/encoder/layer_0/attention/dense/kernel",
                        "bert/embeddings/LayerNorm/kernel", "bert/pooler/dense", "something_else", "bert", ""})
    skipped(g, "unknown name");
}

TEST_CASE("expected BERT shapes under a config") {
  const auto c = bert::BertConfig::from_file(kDir + "/bert_config.json");
  REQUIRE(io::expected_bert_shape("bert.embeddings.word_embeddings.weight", c) == std::vector<index_t>{100, 32});
  REQUIRE(io::expected_bert_shape("bert.embeddings.position_embeddings.weight", c) == std::vector<index_t>{64, 32});
  REQUIRE(io::expected_bert_shape("bert.encoder.layer.1.intermediate.dense.weight", c) == std::vector<index_t>{64, 32});
  REQUIRE(io::expected_bert_shape("bert.encoder.layer.1.output.dense.weight", c) == std::vector<index_t>{32, 64});
  REQUIRE(io::expected_bert_shape("bert.encoder.layer.0.output.LayerNorm.bias", c) == std::vector<index_t>{32});
  REQUIRE(io::expected_bert_shape("classifier.weight", c) == std::vector<index_t>{-1, 32});
  REQUIRE_THROWS_WITH(io::expected_bert_shape("bert.encoder.layer.2.output.dense.bias", c), Contains("the config has 2 layers"));
  REQUIRE_THROWS_WITH(io::expected_bert_shape("decoder.weight", c), Contains("not a BERT parameter"));
}

TEST_CASE("BertTfCheckpoint: Hugging Face names, kernels transposed, skipped tensors listed") {
  const io::BertTfCheckpoint ckpt(kPrefix);
  REQUIRE(ckpt.names().size() == 41);
  REQUIRE(ckpt.skipped().size() == 83);  // 82 Adam slots and global_step
  for (const auto& s : ckpt.skipped()) {
    INFO(s.name);
    REQUIRE((s.name == "global_step" || s.name.ends_with("/adam_m") || s.name.ends_with("/adam_v")));
  }
  REQUIRE(ckpt.source_name("bert.encoder.layer.1.intermediate.dense.weight") == "bert/encoder/layer_1/intermediate/dense/kernel");
  REQUIRE(ckpt.at("bert.encoder.layer.1.intermediate.dense.weight").shape == std::vector<index_t>{64, 32});
  const auto kernel = ckpt.checkpoint().tensor<float, Shape<dyn, dyn>>("bert/encoder/layer_1/intermediate/dense/kernel");
  const auto weight = ckpt.tensor<float, Shape<dyn, dyn>>("bert.encoder.layer.1.intermediate.dense.weight");
  for (index_t i = 0; i < 32; ++i)
    for (index_t o = 0; o < 64; ++o) REQUIRE(weight.data()[o * 32 + i] == kernel.data()[i * 64 + o]);
  Tensor<float, Shape<dyn, dyn>> wrong({32, 64});
  REQUIRE_THROWS_WITH(ckpt.read_into("bert.encoder.layer.1.intermediate.dense.weight", wrong),
                      Contains("(\"bert/encoder/layer_1/intermediate/dense/kernel\" transposed) [64, 32] does not match"));
}

TEST_CASE("a BERT loaded from TensorFlow's checkpoint reproduces TensorFlow's logits") {
  const io::BertTfCheckpoint ckpt(kPrefix);
  const auto config = tanh_config();
  auto model = Model::make(config, ckpt.at("classifier.weight").shape[0]);  // all L+1 rows
  const auto report = io::load_parameters(model, ckpt);
  REQUIRE(report.unused.empty());
  const double diff = max_logit_diff(model);
  WARN("max |ctdl - TensorFlow| logit: " << diff);
  REQUIRE(diff < 1e-5);
  // The erf GELU (what Hugging Face calls "gelu") is measurably not what TensorFlow ran.
  auto erf_config = config;
  erf_config.hidden_act = bert::Activation::gelu_erf;
  auto erf_model = Model::make(erf_config, 5);
  io::load_parameters(erf_model, ckpt);
  REQUIRE(max_logit_diff(erf_model) > 1e-4);
}

TEST_CASE("a token classifier of the TensorFlow run_ner.py reproduces TensorFlow's logits at every position") {
  // tests/fixtures/tf_ner_checkpoint: NVIDIA's and BioBERT's NER head, output_weights [7, 32]
  // (padding, B, I, O, X, [CLS], [SEP]) over the sequence output; 13 features 40 wide, padded.
  using TokenModel = bert::BertForTokenClassification<float, Fam, precision::Fp32>;
  const std::string dir = std::string(CTDL_FIXTURES_DIR) + "/tf_ner_checkpoint";
  const auto prefix = io::find_tf_checkpoint(dir);
  REQUIRE(prefix);
  const io::BertTfCheckpoint ckpt(*prefix);
  const auto fixture = nlohmann::json::parse(test::read_file(dir + "/expected.json"));
  const auto max_diff = [&](const TokenModel& model) {
    Tape tape;
    nn::Context ctx{tape};
    const auto logits = model.forward(ctx, batch_of(fixture));  // [B * S, 7]
    const auto& want = fixture["logits"];
    const std::size_t S = want[0].size(), C = want[0][0].size();
    REQUIRE(logits.extent(0) == static_cast<index_t>(want.size() * S));
    REQUIRE(logits.extent(1) == static_cast<index_t>(C));
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i)
      for (std::size_t t = 0; t < S; ++t)
        for (std::size_t c = 0; c < C; ++c)
          worst = std::max(worst, std::abs(static_cast<double>(logits.value().data()[(i * S + t) * C + c]) - want[i][t][c].get<double>()));
    return worst;
  };
  auto config = bert::BertConfig::from_file(dir + "/bert_config.json");
  config.hidden_act = bert::Activation::gelu_tanh;  // modeling.py's "gelu"
  auto model = TokenModel::make(config, ckpt.at("classifier.weight").shape[0]);
  REQUIRE(model.classifier.weight.value().extent(0) == 7);
  const auto report = io::load_parameters(model, ckpt);
  // A token classifier has no pooler (Hugging Face's neither); BertModel saved one.
  CHECK(report.unused == std::vector<std::string>{"bert.pooler.dense.bias", "bert.pooler.dense.weight"});
  // These logits reach 12 (the head's bias spreads the classes): the bound is relative,
  // a few float ulps of the largest, as the sequence classifier's 1e-5 is of its logits.
  double largest = 0;
  for (const auto& feature : fixture["logits"])
    for (const auto& position : feature)
      for (const auto& v : position) largest = std::max(largest, std::abs(v.get<double>()));
  const double diff = max_diff(model);
  WARN("max |ctdl - TensorFlow| logit over every position: " << diff << " (largest |logit| " << largest << ")");
  REQUIRE(diff < 2e-6 * largest);
  config.hidden_act = bert::Activation::gelu_erf;
  auto erf_model = TokenModel::make(config, 7);
  io::load_parameters(erf_model, ckpt);
  const double erf_diff = max_diff(erf_model);
  WARN("the erf GELU: " << erf_diff);
  REQUIRE(erf_diff > 1e-4);
}

TEST_CASE("TF checkpoint -> safetensors -> ctdl gives identical logits") {
  const io::BertTfCheckpoint ckpt(kPrefix);
  const auto config = tanh_config();
  const std::string out = test::scratch_dir("tf_checkpoint", "convert") + "/model.safetensors";
  const auto written = io::write_bert_safetensors(ckpt, config, out, {{"source", kPrefix}});
  REQUIRE(written.size() == 41);
  const io::SafetensorsFile st(out);
  REQUIRE(st.metadata().at("source") == kPrefix);
  REQUIRE(st.at("bert.encoder.layer.0.attention.self.query.weight").dtype == "F32");
  auto from_tf = Model::make(config, 5), from_st = Model::make(config, 5);
  io::load_parameters(from_tf, ckpt);
  REQUIRE(io::load_parameters(from_st, st).unused.empty());
  std::vector<float> a, b;
  max_logit_diff(from_tf, &a);
  REQUIRE(max_logit_diff(from_st, &b) < 1e-5);
  REQUIRE(a == b);

  // A config that disagrees with the checkpoint: named tensor, both shapes.
  auto wide = config;
  wide.vocab_size = 101;
  REQUIRE_THROWS_WITH(io::write_bert_safetensors(ckpt, wide, out + ".2", {}),
                      Contains("tensor \"bert/embeddings/word_embeddings\" (bert.embeddings.word_embeddings.weight) has shape [100, 32], but the config says [101, 32]"));
  auto deeper = config;
  deeper.num_hidden_layers = 3;
  REQUIRE_THROWS_WITH(io::write_bert_safetensors(ckpt, deeper, out + ".3", {}),
                      Contains("16 parameter(s) of the config's BERT missing, e.g. \"bert.encoder.layer.2."));
  auto shallower = config;
  shallower.num_hidden_layers = 1;
  REQUIRE_THROWS_WITH(io::write_bert_safetensors(ckpt, shallower, out + ".4", {}), Contains("the config has 1 layers"));
  REQUIRE(!fs::exists(out + ".2"));
}

TEST_CASE("find_tf_checkpoint: a prefix, a directory with TensorFlow's checkpoint file, or the newest model.ckpt-N") {
  REQUIRE(io::find_tf_checkpoint(kPrefix) == kPrefix);
  REQUIRE(io::find_tf_checkpoint(kDir) == (fs::path(kDir) / "model.ckpt-7").string());
  REQUIRE(!io::find_tf_checkpoint(kDir + "/bert_config.json"));
  REQUIRE(!io::find_tf_checkpoint(kDir + "/nothing"));
  const std::string prefix = copy_fixture("find");
  const std::string dir = fs::path(prefix).parent_path().string();
  for (const char* step : {"12", "9"}) {
    fs::copy_file(prefix + ".index", dir + "/model.ckpt-" + step + ".index");
    fs::copy_file(prefix + ".data-00000-of-00001", dir + "/model.ckpt-" + step + ".data-00000-of-00001");
  }
  REQUIRE(io::find_tf_checkpoint(dir) == dir + "/model.ckpt-7");  // the state file decides
  write_bytes(dir + "/checkpoint", "model_checkpoint_path: \"/elsewhere/run/model.ckpt-9\"\n");
  REQUIRE(io::find_tf_checkpoint(dir) == dir + "/model.ckpt-9");  // an absolute path from another machine
  fs::remove(dir + "/checkpoint");
  REQUIRE(io::find_tf_checkpoint(dir) == dir + "/model.ckpt-12");  // no state file: the highest step
  write_bytes(dir + "/checkpoint", "model_checkpoint_path: \"model.ckpt-99\"\n");
  REQUIRE_THROWS_WITH(io::find_tf_checkpoint(dir), Contains(dir + "/checkpoint: model_checkpoint_path \"model.ckpt-99\", but") &&
                                                       Contains("model.ckpt-99.index does not exist"));
}

}  // namespace tf_checkpoint_test
