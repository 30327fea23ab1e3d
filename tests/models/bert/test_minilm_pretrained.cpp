// A real pretrained BERT against Hugging Face transformers: all-MiniLM-L6-v2 (ctdl's MiniLM
// family, 6 layers), as scripts/fetch-minilm.sh caches it, run in fp32 on 100 real
// consensus rows (M = 64); its last hidden states must equal those of
// tests/fixtures/minilm/minilm_states.safetensors (tools/make_minilm_fixture.py:
// transformers in float64) within 1e-4: the [CLS] vector and the mean over real tokens
// of every row, and every real position of two rows (the fixture's full.row.K). The weights load from the bare
// BertModel file as shipped (names without "bert."), the config from the
// bert_config.json made from the model's config.json ("gelu" = erf).
//
// With the shared data present, the same rows also go through ctdl's tokenizer and span
// features (uncased, the model's tokenizer.json), which must give the fixture's input ids: the
// ids that ner_span_classifier feeds this model are the ones transformers' tokenizer makes.
//
//   test_models_bert_minilm_pretrained <model dir> <fixture file> <shared data dir>
// Exit status 0 = equal, 1 = a difference or an error (printed), 2 = usage.
// (tests/models/bert/minilm_pretrained_test.sh fetches the model first and skips when it
// cannot.)
#include <ctdl/data/span_features.hpp>
#include <ctdl/io/parameters.hpp>
#include <ctdl/models/bert/model.hpp>
#include <ctdl/precision/policy.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace ctdl;

namespace {

constexpr double kTolerance = 1e-4;

/// Largest |ours - reference| over one comparison, and where it was.
struct Worst {
  double diff = 0;
  std::string where;
  void see(double ours, double reference, const std::string& at) {
    const double d = std::abs(ours - reference);
    if (!(d <= diff)) {  // NaN counts as the worst
      diff = d;
      where = at;
    }
  }
};

/// Fields of one TSV line split at tabs.
std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> cols;
  std::size_t start = 0;
  for (std::size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
    cols.push_back(line.substr(start, tab - start));
  cols.push_back(line.substr(start));
  return cols;
}

/// The fixture rows' features built by ctdl from dev.tsv; the number of rows whose ids
/// differ from the fixture's (the first few are printed).
int check_features(const fs::path& model_dir, const fs::path& data, const Tensor<std::int32_t, Shape<dyn, dyn>>& ids,
                   const Tensor<std::int32_t, Shape<dyn>>& lines) {
  const fs::path tsv = data / "consensus-example" / "dev.tsv";
  std::ifstream in(tsv);
  if (!in) {
    std::cout << "note: no " << tsv << ": the tokenizer part is skipped (configure with -DCTDL_SHARED_DATA=...)\n";
    return 0;
  }
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) all.push_back(line);
  const text::FullTokenizer tok(text::Vocab::from_tokenizer_json(model_dir / "tokenizer.json"), {.lower_case = true});
  const index_t M = ids.extent(1);
  const data::SpanFeatureBuilder builder(tok, {.max_seq_length = M});
  int bad = 0;
  for (index_t r = 0; r < ids.extent(0); ++r) {
    const auto line = static_cast<std::size_t>(lines.data()[r]);
    if (line < 1 || line > all.size()) throw Error(tsv.string() + " has no line " + std::to_string(line));
    const auto cols = split_tabs(all[line - 1]);
    if (cols.size() < 4) throw Error(tsv.string() + ":" + std::to_string(line) + ": fewer than 4 columns");
    const auto n = cols.size();
    const auto ours = builder.build(cols[n - 3], cols[n - 2], cols[n - 1]);
    for (index_t t = 0; t < M; ++t) {
      if (ours[static_cast<std::size_t>(t)] != ids.data()[r * M + t]) {
        if (++bad <= 3)
          std::cout << "FAIL: " << tsv.string() << ":" << line << ": ctdl's id at position " << t << " is "
                    << ours[static_cast<std::size_t>(t)] << ", transformers' " << ids.data()[r * M + t] << "\n";
        break;
      }
    }
  }
  std::cout << "features: " << ids.extent(0) - bad << " of " << ids.extent(0)
            << " rows give the fixture's input ids through ctdl's uncased tokenizer and span features\n";
  return bad;
}

int run(const fs::path& model_dir, const fs::path& fixture_path, const fs::path& data) {
  const io::SafetensorsFile fixture(fixture_path.string());
  const auto ids = fixture.tensor<std::int32_t, Shape<dyn, dyn>>("input_ids");
  const auto lines = fixture.tensor<std::int32_t, Shape<dyn>>("lines");
  const auto cls = fixture.tensor<float, Shape<dyn, dyn>>("expected.cls");
  const auto mean = fixture.tensor<float, Shape<dyn, dyn>>("expected.mean");
  const index_t B = ids.extent(0), M = ids.extent(1);

  const auto config = bert::BertConfig::from_file((model_dir / "bert_config.json").string());
  using Model = bert::BertModel<float, bert::MiniLM, precision::Fp32>;
  auto model = Model::make(config);
  const io::SafetensorsFile weights((model_dir / "model.safetensors").string());
  const auto report = io::load_parameters(model, weights, "");  // the bare BertModel names
  for (const auto& name : report.unused)
    if (name != "embeddings.position_ids")  // a buffer (0..511), not a parameter
      throw Error(weights.path() + ": tensor \"" + name + "\" was not loaded into any parameter");
  const auto pad = static_cast<std::int32_t>(text::Vocab::from_tokenizer_json(model_dir / "tokenizer.json").special().pad);

  bert::Batch batch{ids, Tensor<std::int32_t, Shape<dyn, dyn>>({B, M}), Tensor<std::int32_t, Shape<dyn, dyn>>({B, M})};
  for (index_t i = 0; i < B * M; ++i) batch.attention_mask.data()[i] = ids.data()[i] != pad;  // 0 at every [PAD]
  Tape tape;
  NoGrad no_grad(tape);
  nn::Context ctx{tape};
  const auto out = model.forward(ctx, batch);
  const auto& states = out.sequence.value();  // B*M x H
  const index_t H = states.extent(1);
  if (cls.extent(0) != B || cls.extent(1) != H || mean.extent(0) != B || mean.extent(1) != H)
    throw Error(fixture_path.string() + ": expected.cls/mean are not " + std::to_string(B) + " x " + std::to_string(H));

  Worst worst_cls, worst_mean, worst_full;
  for (index_t r = 0; r < B; ++r) {
    const std::string row = "row " + std::to_string(r) + " (dev.tsv:" + std::to_string(lines.data()[r]) + ")";
    double real = 0;
    std::vector<double> sum(static_cast<std::size_t>(H), 0.0);
    for (index_t t = 0; t < M; ++t) {
      if (!batch.attention_mask.data()[r * M + t]) continue;
      ++real;
      for (index_t h = 0; h < H; ++h) sum[static_cast<std::size_t>(h)] += states.data()[(r * M + t) * H + h];
    }
    for (index_t h = 0; h < H; ++h) {
      const std::string at = row + ", unit " + std::to_string(h);
      worst_cls.see(states.data()[(r * M) * H + h], cls.data()[r * H + h], at);
      worst_mean.see(sum[static_cast<std::size_t>(h)] / real, mean.data()[r * H + h], at);
    }
  }
  int full_rows = 0;
  for (; fixture.contains("expected.full." + std::to_string(full_rows)); ++full_rows) {
    const std::string k = std::to_string(full_rows);
    const auto full = fixture.tensor<float, Shape<dyn, dyn>>("expected.full." + k);
    const auto positions = fixture.tensor<std::int32_t, Shape<dyn>>("full.positions." + k);
    const index_t r = fixture.tensor<std::int32_t, Shape<dyn>>("full.row." + k).data()[0];
    if (r < 0 || r >= B || full.extent(0) != positions.extent(0) || full.extent(1) != H)
      throw Error(fixture_path.string() + ": full.row." + k + ", full.positions." + k + " and expected.full." + k +
                  " do not fit " + std::to_string(B) + " rows of " + std::to_string(H));
    for (index_t i = 0; i < positions.extent(0); ++i)
      for (index_t h = 0; h < H; ++h)
        worst_full.see(states.data()[(r * M + positions.data()[i]) * H + h], full.data()[i * H + h],
                       "row " + std::to_string(r) + ", position " + std::to_string(positions.data()[i]) + ", unit " +
                           std::to_string(h));
  }
  if (full_rows == 0) throw Error(fixture_path.string() + ": no expected.full.0");

  int failures = 0;
  for (const auto& [what, w] : {std::pair{"[CLS] state", &worst_cls}, {"mean over real tokens", &worst_mean},
                                {"every real position's state", &worst_full}}) {
    const bool ok = w->diff <= kTolerance;
    failures += !ok;
    std::cout << (ok ? "ok:   " : "FAIL: ") << what << ": max |ctdl - transformers| = " << w->diff << " (at "
              << w->where << "), tolerance " << kTolerance << "\n";
  }
  std::cout << "compared " << B << " rows of " << M << " tokens, full states of " << full_rows << " rows; "
            << "weights " << weights.path() << "\n";
  failures += check_features(model_dir, data, ids, lines);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " <model dir (scripts/fetch-minilm.sh)> <fixture .safetensors> <shared data dir>\n";
    return 2;
  }
  try {
    return run(argv[1], argv[2], argv[3]);
  } catch (const std::exception& e) {
    std::cout << "FAIL: " << e.what() << "\n";
    return 1;
  }
}
