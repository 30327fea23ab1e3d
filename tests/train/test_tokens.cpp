// predict_tokens and evaluate_tokens (train/tokens.hpp) on a tiny BertForTokenClassification
// over the real data path (CoNLL -> token features -> cache): each word's prediction is the
// argmax at its first piece, computed here from the model's own logits feature by feature;
// sentences cut into several features come back whole; the mean loss is cross_entropy's;
// the ranks' split gives one process's result; fit learns a toy NER task and the
// evaluation's conlleval scores agree with a count over the words.
#include <catch2/catch.hpp>

#include <ctdl/data/conll.hpp>
#include <ctdl/train/loops.hpp>
#include <ctdl/train/tokens.hpp>

#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "../dist/thread_comm.hpp"
#include "toy_task.hpp"

using namespace ctdl;

namespace tokens_test {

using F = bert::Family<32, 4, 64>;
using P = precision::Fp32;
using Model = bert::BertForTokenClassification<float, F, P>;
const std::vector<std::string> kLabels{"B", "I", "O"};

/// A toy NER set: "hello world" is an entity (B I), "effect" and "unaffable" (3 pieces)
/// are one-word entities, the rest is O; sentences of 1 to 11 words, so at M = 8 (6
/// pieces a feature) many are cut into several features.
struct ToyNer {
  std::string path;
  std::vector<std::vector<std::string>> words, tags;
};

const ToyNer& toy_ner() {
  static const ToyNer set = [] {
    ToyNer s;
    const char* noise[] = {"the", "of", "a", "c", "d", "e"};
    std::string text;
    for (int i = 0; i < 60; ++i) {
      std::vector<std::string> w, t;
      const int n = 1 + (i * 7) % 11;
      for (int k = 0; k < n; ++k) {
        const int pick = (i * 13 + k * 5) % 9;
        if (pick == 0 && k + 1 < n) {
          w.insert(w.end(), {"hello", "world"});
          t.insert(t.end(), {"B", "I"});
          ++k;
        } else if (pick == 1) {
          w.push_back("effect"), t.push_back("B");
        } else if (pick == 2) {
          w.push_back("unaffable"), t.push_back("B");
        } else {
          w.push_back(noise[(i + k) % 6]), t.push_back("O");
        }
      }
      for (std::size_t k = 0; k < w.size(); ++k) text += w[k] + "\t" + t[k] + "\n";
      text += "\n";
      s.words.push_back(w);
      s.tags.push_back(t);
    }
    s.path = test::write_file("tokens_toy.tsv", text);
    return s;
  }();
  return set;
}

const data::FeatureCache& toy_cache() {
  static const std::unique_ptr<data::FeatureCache> cache = [] {
    const data::LabelSet labels(kLabels);
    const data::TokenFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 8});
    const std::string path = std::string(CTDL_TEST_TMP) + "/tokens_toy.features";
    data::prepare_token_cache(toy_ner().path, path, labels, builder, test::tiny_tokenizer(), false);
    return std::make_unique<data::FeatureCache>(path);
  }();
  return *cache;
}

Model make_model(std::uint64_t seed, index_t positions = 16) {
  auto config = test::toy_bert_config(/*dropout=*/false);
  config.max_position_embeddings = positions;
  auto m = Model::make(config, 3);
  bert::init_weights(m, 0.02, seed);
  return m;
}

/// The toy set at M = 32: every sentence in one feature, 3 to 17 tokens, so that batches
/// with trimmed padding (8, 16 or 24 wide) are narrower than M.
const data::FeatureCache& wide_cache() {
  static const std::unique_ptr<data::FeatureCache> cache = [] {
    const data::TokenFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 32});
    const std::string path = std::string(CTDL_TEST_TMP) + "/tokens_toy_wide.features";
    data::prepare_token_cache(toy_ner().path, path, data::LabelSet(kLabels), builder, test::tiny_tokenizer(), false);
    return std::make_unique<data::FeatureCache>(path);
  }();
  return *cache;
}

/// Feature r of the cache as a batch of one.
data::Batch feature_batch(const data::FeatureCache& cache, std::size_t r) {
  const index_t M = cache.max_seq_length();
  data::Batch b;
  b.input_ids = Batch::Ids::uninitialized({1, M});
  b.token_type_ids = Batch::Ids::full({1, M}, 0);
  b.attention_mask = Batch::Ids::uninitialized({1, M});
  for (index_t t = 0; t < M; ++t) {
    b.input_ids.data()[t] = cache.input_ids(r)[t];
    b.attention_mask.data()[t] = attention_mask(cache.input_ids(r)[t], cache.header().pad_id);
  }
  return b;
}

/// The model's logits for feature r alone (M positions x classes), without dropout.
template <class M>
auto feature_logits(const M& model, const data::FeatureCache& cache, std::size_t r) {
  Tape tape;
  NoGrad no_grad(tape);
  nn::Context ctx{tape, false};
  return model.forward(ctx, feature_batch(cache, r)).value();
}

}  // namespace tokens_test

TEST_CASE("predict_tokens: each word once, in file order, the argmax at its first piece") {
  using namespace tokens_test;
  const auto& set = toy_ner();
  const auto& cache = toy_cache();
  REQUIRE(cache.rows() > set.words.size());  // some sentences were cut into several features
  const auto model = make_model(3);
  const auto p = train::predict_tokens(model, cache, 5, 3);

  REQUIRE(p.sentences() == set.words.size());
  std::size_t total = 0;
  for (std::size_t k = 0; k < set.words.size(); ++k) {
    CHECK(p.sentence_index[k] == k);
    CHECK(p.sentence_begin[k + 1] - p.sentence_begin[k] == set.words[k].size());
    for (std::size_t w = 0; w < set.tags[k].size(); ++w)
      CHECK(kLabels[static_cast<std::size_t>(p.truth[p.sentence_begin[k] + w])] == set.tags[k][w]);
    total += set.words[k].size();
  }
  REQUIRE(p.words() == total);

  // The same, feature by feature through the model's own forward: the argmax and softmax
  // at each scored position, in order.
  std::size_t w = 0;
  double loss = 0;
  for (std::size_t r = 0; r < cache.rows(); ++r) {
    const auto logits = feature_logits(model, cache, r);
    for (index_t t = 0; t < cache.max_seq_length(); ++t) {
      const std::int32_t y = cache.label_ids(r)[t];
      if (y < 0) continue;
      const float* l = logits.data() + t * 3;
      const int best = static_cast<int>(std::max_element(l, l + 3) - l);
      const double z = std::exp(l[0]) + std::exp(l[1]) + std::exp(l[2]);
      CHECK(p.predicted[w] == best);
      CHECK(p.probability[w] == Approx(std::exp(l[best]) / z).epsilon(1e-5));
      loss += -std::log(std::exp(l[y]) / z);
      ++w;
    }
  }
  CHECK(w == total);
  CHECK(p.mean_loss == Approx(loss / static_cast<double>(total)).epsilon(1e-6));
  CHECK(p.first_non_finite_row == -1);
  CHECK(p.batch_rows.size() == (cache.rows() + 4) / 5);
}

TEST_CASE("predict_tokens: the mean loss is cross_entropy's over every scored token, as the trainer's") {
  using namespace tokens_test;
  const auto& cache = toy_cache();
  const auto model = make_model(4);
  const auto p = train::predict_tokens(model, cache, static_cast<index_t>(cache.rows()), 3);
  data::Batcher batcher(cache, {.batch_size = static_cast<index_t>(cache.rows()), .shuffle = false});
  batcher.start_epoch(0);
  data::Batch all;
  REQUIRE(batcher.next(all));
  Tape tape;
  NoGrad no_grad(tape);
  nn::Context ctx{tape, false};
  const auto logits = model.forward(ctx, all);
  auto scored = Tensor<float, Shape<dyn>>::uninitialized({all.labels.size()});
  for (index_t i = 0; i < all.labels.size(); ++i) scored.data()[i] = all.labels.data()[i] >= 0 ? 1.0f : 0.0f;
  const auto loss = ops::cross_entropy(tape, logits, all.labels, scored);
  CHECK(p.mean_loss == Approx(loss.value().data()[0]).epsilon(1e-5));
  // The trainer's loss is the same (it masks the -1 labels itself).
  CHECK(train::classification_loss(tape, logits, all.labels).value().data()[0] == loss.value().data()[0]);
  // Any other label outside [0, 3) is still an error.
  all.labels.data()[0] = -2;
  CHECK_THROWS_WITH(train::classification_loss(tape, logits, all.labels), Catch::Contains("label -2 of row 0"));
}

TEST_CASE("predict_tokens on 3 rank threads equals one process") {
  using namespace tokens_test;
  const auto& cache = toy_cache();
  const auto model = make_model(5);
  const auto one = train::predict_tokens(model, cache, 2, 3);
  test::ThreadGroup group(3);
  std::mutex m;
  std::vector<std::string> failures;
  group.run<Cpu>([&](test::ThreadComm<Cpu>& comm) {
    const auto p = train::predict_tokens(model, cache, 2, 3, {}, comm);
    std::lock_guard<std::mutex> lock(m);
    if (p.predicted != one.predicted || p.truth != one.truth || p.sentence_begin != one.sentence_begin ||
        p.probability != one.probability || p.mean_loss != one.mean_loss)
      failures.push_back("rank " + std::to_string(comm.rank()) + " differs from one process");
  });
  CHECK(failures.empty());
}

TEST_CASE("fit learns the toy NER task, and evaluate_tokens' scores agree with a count over the words") {
  using namespace tokens_test;
  const auto& cache = toy_cache();
  auto model = make_model(6);
  const auto before = train::evaluate_tokens(model, cache, 8, kLabels);
  train::FitHooks quiet;
  quiet.say = [](const std::string&) {};
  train::fit<P>(model, cache, {.batch_size = 8, .epochs = 8, .learning_rate = 3e-3, .seed = 1}, quiet);
  const auto e = train::evaluate_tokens(model, cache, 8, kLabels);
  INFO("loss " << before.metrics.at("eval_loss") << " -> " << e.metrics.at("eval_loss") << ", f1 "
               << before.metrics.at("f1") << " -> " << e.metrics.at("f1") << "\n" << e.entities.report());
  CHECK(e.metrics.at("eval_loss") < 0.5 * before.metrics.at("eval_loss"));
  CHECK(e.metrics.at("f1") > 0.8);

  // Entities by hand, before training (noisy predictions) and after: a B starts one, and
  // an I after O or at a sentence's start; I continues it. (The toy's gold tags have no I
  // without a B; every chunk is untyped.)
  for (const auto* ev : {&before, &e}) {
    const auto& p = ev->predictions;
    std::int64_t gold = 0, found = 0, correct = 0, right_words = 0;
    for (std::size_t k = 0; k < p.sentences(); ++k) {
      const std::size_t a = p.sentence_begin[k], z = p.sentence_begin[k + 1];
      const auto span_end = [&](const std::vector<std::int32_t>& tags, std::size_t from) {
        std::size_t end = from + 1;
        while (end < z && tags[end] == 1) ++end;
        return end;
      };
      for (std::size_t w = a; w < z; ++w) {
        right_words += p.truth[w] == p.predicted[w];
        const bool gold_starts = p.truth[w] == 0;
        const bool found_starts = p.predicted[w] == 0 || (p.predicted[w] == 1 && (w == a || p.predicted[w - 1] == 2));
        gold += gold_starts;
        found += found_starts;
        correct += gold_starts && found_starts && span_end(p.truth, w) == span_end(p.predicted, w);
      }
    }
    CHECK(ev->entities.overall.gold == gold);
    CHECK(ev->entities.overall.predicted == found);
    CHECK(ev->entities.overall.correct == correct);
    CHECK(ev->metrics.at("eval_accuracy") == Approx(static_cast<double>(right_words) / static_cast<double>(p.words())));
    CHECK(ev->words.accuracy == Approx(ev->metrics.at("eval_accuracy")));
  }
  CHECK(before.entities.overall.correct < before.entities.overall.gold);  // the noisy case is not trivial
}

TEST_CASE("trimmed batches (the default) give the predictions of batches padded to M, for a fraction of the width") {
  using namespace tokens_test;
  const auto& cache = wide_cache();
  REQUIRE(cache.rows() == toy_ner().words.size());  // one feature a sentence
  // The token batches the default makes: as wide as their longest feature, rounded up to 8.
  data::Batcher batcher(cache, {.batch_size = 6, .shuffle = false, .trim_padding = true});
  batcher.start_epoch(0);
  data::Batch batch;
  index_t narrowest = cache.max_seq_length();
  while (batcher.next(batch)) {
    const index_t S = batch.seq_len();
    narrowest = std::min(narrowest, S);
    REQUIRE(batch.labels.size() == batch.size() * S);
    for (index_t i = 0; i < batch.size(); ++i) {
      const std::int32_t* labels = cache.label_ids(batch.rows[static_cast<std::size_t>(i)]);
      for (index_t t = 0; t < S; ++t) CHECK(batch.labels.data()[i * S + t] == labels[t]);
      for (index_t t = S; t < cache.max_seq_length(); ++t) CHECK(labels[t] == -1);  // nothing scored is cut off
    }
  }
  CHECK(narrowest < cache.max_seq_length());

  const auto model = make_model(7, 32);
  const auto trimmed = train::predict_tokens(model, cache, 6, 3);
  const auto padded = train::predict_tokens(model, cache, 6, 3, {.pad_to_max_length = true});
  // The default groups the features by length; in file order, trimmed, the same too.
  const auto in_file_order = train::predict_tokens(model, cache, 6, 3, {.group_by_length = false});
  for (const auto* other : {&padded, &in_file_order}) {
    REQUIRE(trimmed.words() == other->words());
    CHECK(trimmed.predicted == other->predicted);
    CHECK(trimmed.truth == other->truth);
    CHECK(trimmed.sentence_begin == other->sentence_begin);
    for (std::size_t w = 0; w < trimmed.words(); ++w)
      CHECK(trimmed.probability[w] == Approx(other->probability[w]).epsilon(1e-5));
    CHECK(trimmed.mean_loss == Approx(other->mean_loss).epsilon(1e-6));
  }
  CHECK_THROWS_WITH(train::predict_tokens(model, cache, 6, 3, {.keep_logits = true}),
                    Catch::Contains("keep_logits and keep_pooled are predict()'s options"));

  // Training (dropout off): the same steps on trimmed and on padded batches end at the
  // same model, as its predictions show.
  train::FitHooks quiet;
  quiet.say = [](const std::string&) {};
  auto a = make_model(8, 32), b = make_model(8, 32);
  train::fit<P>(a, cache, {.batch_size = 8, .epochs = 3, .learning_rate = 1e-3, .seed = 2}, quiet);
  train::fit<P>(b, cache, {.batch_size = 8, .epochs = 3, .learning_rate = 1e-3, .pad_to_max_length = true, .seed = 2},
                quiet);
  const auto pa = train::predict_tokens(a, cache, 8, 3), pb = train::predict_tokens(b, cache, 8, 3);
  CHECK(pa.predicted == pb.predicted);
  for (std::size_t w = 0; w < pa.words(); ++w) CHECK(pa.probability[w] == Approx(pb.probability[w]).epsilon(1e-4));
  CHECK(pa.mean_loss == Approx(pb.mean_loss).epsilon(1e-4));
  CHECK(pa.mean_loss < 0.9 * trimmed.mean_loss);  // it trained

  // Grouped by length (shuffled runs sorted by length): other batches, and it trains as well.
  auto c = make_model(8, 32);
  train::fit<P>(
      c, cache, {.batch_size = 8, .epochs = 3, .learning_rate = 1e-3, .group_by_length = true, .seed = 2}, quiet);
  const auto pc = train::predict_tokens(c, cache, 8, 3);
  CHECK(pc.mean_loss < 0.9 * trimmed.mean_loss);
  CHECK(pc.mean_loss != pa.mean_loss);  // another sequence of batches
  CHECK_THROWS_WITH(train::fit<P>(c, cache, {.batch_size = 8, .pad_to_max_length = true, .group_by_length = true}, quiet),
                    Catch::Contains("group_by_length needs batches as wide as their longest row"));
}

TEST_CASE("predict_tokens refuses span features") {
  const auto& spans = test::toy_span_cache("tokens_spans");
  const auto model = tokens_test::make_model(1);
  CHECK_THROWS_WITH(train::predict_tokens(model, spans, 4, 3), Catch::Contains("span features, not token features"));
}

TEST_CASE("predict_tokens and evaluate_tokens over a file of no sentences") {
  const std::string conll = test::write_file("tokens_empty.tsv", "\n\n");
  const std::string path = std::string(CTDL_TEST_TMP) + "/tokens_empty.features";
  data::prepare_token_cache(conll, path, data::LabelSet(tokens_test::kLabels),
                            data::TokenFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 8}),
                            test::tiny_tokenizer(), false);
  const data::FeatureCache cache(path);
  REQUIRE(cache.rows() == 0);
  const auto model = tokens_test::make_model(2);
  const auto e = train::evaluate_tokens(model, cache, 4, tokens_test::kLabels);
  CHECK(e.predictions.sentences() == 0);
  CHECK(e.predictions.words() == 0);
  CHECK(e.predictions.sentence_begin == std::vector<std::size_t>{0});
  CHECK(e.predictions.mean_loss == 0);
  CHECK(e.entities.report() == "processed 0 tokens with 0 phrases; found: 0 phrases; correct: 0.\n");
  CHECK(e.metrics.at("f1") == 0);
}

namespace tokens_test {
/// NVIDIA's TensorFlow run_ner.py's result_to_pair, written as that code is: the predicted
/// class ids of a feature's positions read in order (0, [CLS] and X skipped, [SEP] ends
/// them), cut to the words or filled with "O"; returned as word label ids (class - 1).
std::vector<std::int32_t> result_to_pair(const std::vector<int>& pred_ids, int L, std::size_t words, int outside) {
  const std::vector<std::string> id2label{"", "B", "I", "O", "X", "[CLS]", "[SEP]"};  // L = 3
  REQUIRE(L == 3);
  std::vector<std::string> pred_labels;
  for (const int id : pred_ids) {
    if (id == 0) continue;
    const std::string curr_label = id2label[static_cast<std::size_t>(id)];
    if (curr_label == "[CLS]") continue;
    if (curr_label == "[SEP]") break;
    if (curr_label == "X") continue;
    pred_labels.push_back(curr_label);
  }
  if (pred_labels.size() > words) pred_labels.resize(words);
  while (pred_labels.size() < words) pred_labels.push_back("O");
  std::vector<std::int32_t> out;
  for (const auto& l : pred_labels) out.push_back(l == "B" ? 0 : l == "I" ? 1 : outside);
  return out;
}
}  // namespace tokens_test

TEST_CASE("read_tensorflow_labels reads predictions as the TensorFlow run_ner.py's result_to_pair does") {
  using tokens_test::result_to_pair;
  const auto logits_of = [](const std::vector<int>& classes) {  // each position's argmax as given
    std::vector<float> l(classes.size() * 7, 0.f);
    for (std::size_t t = 0; t < classes.size(); ++t) l[t * 7 + static_cast<std::size_t>(classes[t])] = 2.f;
    return l;
  };
  const auto read = [&](const std::vector<int>& classes, std::size_t words) {
    const auto l = logits_of(classes);
    std::vector<float> label(words), prob(words);
    data::read_tensorflow_labels(l.data(), classes.size(), 3, words, 2, label.data(), prob.data());
    return std::vector<std::int32_t>(label.begin(), label.end());
  };
  for (const auto& [classes, words] : std::vector<std::pair<std::vector<int>, std::size_t>>{
           {{5, 1, 4, 3, 2, 6, 0, 0}, 3},  // [CLS] B X O I [SEP]: B, O, I
           {{5, 4, 1, 3, 6, 0, 0, 0}, 3},  // X at a first piece shifts the rest; the third word gets O
           {{5, 1, 1, 1, 1, 6}, 2},        // more labels than words: the first two
           {{5, 1, 0, 0, 2, 0}, 2},        // no [SEP]: padding skipped, read to the end
           {{6, 1, 2}, 2}}) {              // [SEP] first: every word O
    CHECK(read(classes, words) == result_to_pair(classes, 3, words, 2));
  }
  // Probabilities: the read position's softmax; 0 for a filled word.
  const auto l = logits_of({5, 1, 6});
  std::vector<float> label(2), prob(2);
  data::read_tensorflow_labels(l.data(), 3, 3, 2, 2, label.data(), prob.data());
  CHECK(prob[0] == Approx(std::exp(2.0) / (std::exp(2.0) + 6)).epsilon(1e-6));
  CHECK(prob[1] == 0.f);
  CHECK(label[1] == 2.f);
}

TEST_CASE("the tensorflow token scheme: fit trains every position on L + 4 classes, predict_tokens reads them as run_ner.py") {
  using namespace tokens_test;
  const auto& cache = wide_cache();
  auto config = test::toy_bert_config(/*dropout=*/false);
  config.max_position_embeddings = 32;
  auto model = Model::make(config, 7);
  bert::init_weights(model, 0.02, 11);
  const train::PredictOptions tf{.token_scheme = data::TokenScheme::tensorflow, .outside_label = 2};
  const auto before = train::evaluate_tokens(model, cache, 8, kLabels, tf);
  train::FitHooks quiet;
  quiet.say = [](const std::string&) {};
  CHECK_THROWS_WITH(train::fit<P>(model, cache, {.batch_size = 8, .token_scheme = data::TokenScheme::tensorflow, .word_labels = 3}, quiet),
                    Catch::Contains("the tensorflow token scheme averages the loss over every position"));
  train::fit<P>(model, cache,
                {.batch_size = 8, .epochs = 8, .learning_rate = 3e-3, .pad_to_max_length = true,
                 .token_scheme = data::TokenScheme::tensorflow, .word_labels = 3, .seed = 1},
                quiet);
  const auto e = train::evaluate_tokens(model, cache, 8, kLabels, tf);
  INFO("loss " << before.metrics.at("eval_loss") << " -> " << e.metrics.at("eval_loss") << "\n" << e.entities.report());
  CHECK(e.metrics.at("eval_loss") < 0.5 * before.metrics.at("eval_loss"));
  CHECK(e.metrics.at("f1") > 0.8);

  // Each feature's labels from the model's own logits at every position (M wide), read by
  // result_to_pair; the loss over the words' classes (label + 1) at their first pieces.
  const auto& p = e.predictions;
  std::size_t w = 0;
  double loss = 0;
  for (std::size_t r = 0; r < cache.rows(); ++r) {
    const auto logits = feature_logits(model, cache, r);
    std::vector<int> pred_ids;
    std::size_t words = 0;
    for (index_t t = 0; t < cache.max_seq_length(); ++t) {
      const float* l = logits.data() + t * 7;
      pred_ids.push_back(static_cast<int>(std::max_element(l, l + 7) - l));
      const std::int32_t y = cache.label_ids(r)[t];
      if (y < 0) continue;
      double z = 0;
      for (int k = 0; k < 7; ++k) z += std::exp(l[k]);
      loss += -std::log(std::exp(l[y + 1]) / z);
      ++words;
    }
    const auto want = result_to_pair(pred_ids, 3, words, 2);
    for (std::size_t k = 0; k < words; ++k) CHECK(p.predicted[w + k] == want[k]);
    w += words;
  }
  REQUIRE(w == p.words());
  CHECK(p.mean_loss == Approx(loss / static_cast<double>(w)).epsilon(1e-5));
  // The same labels in batches padded to M (every position read); and M-wide batches of 2
  // on 3 rank threads give one process's batches of 2 exactly (trimmed batches of other
  // widths would differ in the last bits).
  const train::PredictOptions tf_padded{.pad_to_max_length = true, .token_scheme = data::TokenScheme::tensorflow,
                                        .outside_label = 2};
  const auto one = train::predict_tokens(model, cache, 2, 7, tf_padded);
  CHECK(one.predicted == p.predicted);
  test::ThreadGroup group(3);
  std::mutex m;
  std::vector<std::string> failures;
  group.run<Cpu>([&](test::ThreadComm<Cpu>& comm) {
    const auto q = train::predict_tokens(model, cache, 2, 7, tf_padded, comm);
    std::lock_guard<std::mutex> lock(m);
    if (q.predicted != one.predicted || q.probability != one.probability || q.mean_loss != one.mean_loss)
      failures.push_back("rank " + std::to_string(comm.rank()) + " differs from one process");
  });
  CHECK(failures.empty());
  CHECK_THROWS_WITH(train::predict_tokens(model, cache, 8, 3, tf), Catch::Contains("the tensorflow scheme needs L + 4 classes"));
}
