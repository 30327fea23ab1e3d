#pragma once
// ner_span_classifier: the span classifier of the original pipeline (run_ner_consensus.py)
// in C++: prepare features, train, evaluate, predict; with --task_name=ner, the NER recipe
// of BioBERT and NVIDIA (run_ner.py: token classification of CoNLL files). main.cpp reads the flags and checks
// every input before any work; run<F, P, D>() does the work for one compiled BERT family
// F, precision policy P and device D (one translation unit per family and device,
// compiled in parallel).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include <ctdl/data/labels.hpp>
#include <ctdl/dist/any_comm.hpp>
#include <ctdl/io/atomic_file.hpp>
#include <ctdl/models/bert/config.hpp>
#include <ctdl/text/tokenizer.hpp>

namespace span_classifier {

struct Args {
  bool do_prepare = false, do_train = false, do_eval = false, do_predict = false;
  std::string task_name = "consensus";
  std::string replace_span;  // "" = no replacement
  std::string init_checkpoint, vocab_file, bert_config_file, data_dir, output_dir, labels_dir;
  // The defaults are the original scripts' (run_ner_consensus.py, and NVIDIA's run_ner.py
  // for --task_name=ner: the same values but save_checkpoints_steps, 1000 there; parse()).
  std::int64_t train_batch_size = 64, eval_batch_size = 16, predict_batch_size = 16, max_seq_length = 128;
  double learning_rate = 5e-6, num_train_epochs = 10.0, warmup_proportion = 0.1;
  std::int64_t save_checkpoints_steps = 10000, gradient_accumulation_steps = 1, log_every = 10;
  std::int64_t keep_checkpoint_max = 1;  // the original's RunConfig(keep_checkpoint_max=1) (BERT-base + AdamW: ~1.3 GB each)
  bool cased = true;  // the original's do_lower_case=False: the text keeps its case (BioBERT's vocabulary is cased)
  bool use_fp16 = false, use_xla = false, distributed = false;
  std::int64_t iterations_per_loop = 1000;  // the original's TPU flag, accepted; no effect
  std::string master;                       // the original's TPU flag, accepted; no effect
  bool tpu_flags_given = false;             // either of them (a note says they do nothing)
  std::string case_flag = "--cased=true";   // the flag that chose the case, as given (--cased or --do_lower_case), for messages
  std::string precision;  // fp32 | bf16 | fp16; "" = from --use_fp16
  std::string tokenizer_rules = "original";  // original | google (text::TokenizerRules)
  std::string phantom_class = "last";  // the original numbers labels 0..L-1: row L is the unused one
  std::string hidden_act;  // gelu_tanh | gelu_erf; "" = by where the weights come from (docs/checkpoints.md)
  std::int64_t seed = 42, num_threads = 0;
  bool shuffle = true, dump_features = false, resume = false, skip_bad_rows = false;
  bool write_npy = false;  // --do_predict also writes test_logits.npy, test_pooled.npy
  bool pad_to_max_length = false;  // every batch M wide (the original's); else as wide as its longest row
  bool group_by_length = false;    // training batches of rows of similar length (Hugging Face's group_by_length)
  double max_grad_norm = 1.0;
  bool shard_optimizer = false;       // --distributed: ZeRO-1, the optimizer state split across the ranks
  std::int64_t bucket_size_mb = 25;   // --distributed: gradients fused per all-reduce
  std::string device = "cpu";         // cpu | cuda | cuda:N
  std::string ner_scheme;  // first_piece | tensorflow (data/token_scheme.hpp); "": tensorflow, the original's, for ner
};

/// Everything read and checked before work starts.
struct Setup {
  Args args;
  ctdl::bert::BertConfig config;
  const ctdl::text::FullTokenizer* tokenizer = nullptr;
  const ctdl::data::LabelSet* labels = nullptr;
  // The NER task's labels found in train.tsv (rank 0): labels->source(), pending in
  // --output_dir until a model is saved with them, so that a run that stops early leaves an
  // earlier model's labels.txt as it was; nullptr otherwise.
  std::shared_ptr<const ctdl::io::PendingFile> pending_labels;
  // What names the labels in messages: labels.txt's path, or "<data_dir>/train.tsv (its labels)".
  std::string labels_origin;
  std::string checkpoint_file;  // model.safetensors or a TensorFlow checkpoint prefix to start from, or "" (random init)
  bool checkpoint_is_tf = false;  // checkpoint_file is a TensorFlow 1.x checkpoint prefix (Google's names)
  ctdl::dist::AnyComm* comm = nullptr;  // the ranks (one process: a LocalComm's); rank 0 alone writes and logs
  // --distributed --device=cuda on several ranks: NCCL over the same ranks, for the
  // model's weights and gradients on the GPUs; nullptr otherwise (comm carries them).
  ctdl::dist::AnyComm* device_comm = nullptr;
  std::string device_name;  // --device=cuda: the GPU's name (the run's device is current); "" on the CPU
};

/// Whether this process stays silent: a rank other than 0 of a --distributed run (its
/// errors still print; its notes and progress would repeat rank 0's).
inline bool quiet_rank = false;

/// A line on stderr for the person running the program (rank 0 only).
inline void say(const std::string& s) {
  if (!quiet_rank) std::fprintf(stderr, "%s\n", s.c_str());
}

/// D: Cpu, or Cuda (instantiated in the CUDA translation units of a CUDA build; the
/// device chosen by --device is current when it is called).
template <class F, class P, class D = ctdl::Cpu>
int run(const Setup& setup);

/// --task_name=ner (run_ner.hpp): token classification on the runtime-shaped family, on
/// the CPU or (D = Cuda) the run's CUDA device.
template <class P, class D = ctdl::Cpu>
int run_ner(const Setup& setup);

/// --task_name lower-cased: task names are case-blind, as the original scripts lower-case them.
inline std::string task_name(const Args& a) {
  std::string t = a.task_name;
  for (char& c : t) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return t;
}

/// Whether the run is the NER task (BioBERT's run_ner.py).
inline bool is_ner(const Args& a) {
  return task_name(a) == "ner";
}

/// A warning when the case flag contradicts the vocabulary, or "". A cased vocabulary
/// has tokens with capital letters (bert-base-cased and BioBERT: 8,179 of 28,996; the
/// uncased one: none); bracketed special tokens ([CLS], [unused1]) do not count, and
/// ASCII capitals are enough to tell (every cased vocabulary has "A"). Lower-casing for a
/// cased vocabulary never reaches its capitalised tokens; keeping the case for an uncased
/// one makes capitalised words [UNK] or splits them.
inline std::string vocab_case_warning(const ctdl::text::Vocab& vocab, bool cased, const std::string& case_flag) {
  std::size_t capitalised = 0;
  std::string examples;
  for (const auto& t : vocab.tokens()) {
    if (t.size() >= 2 && t.front() == '[' && t.back() == ']') continue;
    if (std::none_of(t.begin(), t.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) continue;
    if (++capitalised <= 3) examples += (examples.empty() ? "'" : ", '") + t + "'";
  }
  if (!cased && capitalised > 0)
    return case_flag + " lower-cases the text, but " + vocab.source() + " is a cased vocabulary (" +
           std::to_string(capitalised) + " tokens with capital letters, e.g. " + examples +
           "): capitalised words will never match them; give --cased=true (--do_lower_case=false) for a cased model";
  if (cased && capitalised == 0)
    return case_flag + " keeps the case, but " + vocab.source() +
           " has no token with a capital letter (an uncased vocabulary): capitalised words will become [UNK] or be "
           "split; give --cased=false (--do_lower_case=true) for an uncased model";
  return "";
}

/// A warning when the case flag contradicts what a tokenizer.json's normalizer does
/// (`lowercases`: text::Vocab::tokenizer_json_lowercases), or "". The tokenizer.json was
/// saved with the model, so its normalizer says how the model was trained to see text.
inline std::string tokenizer_case_warning(const std::string& tokenizer_json, bool lowercases, bool cased,
                                          const std::string& case_flag) {
  if (lowercases && cased)
    return case_flag + " keeps the case, but the normalizer of " + tokenizer_json +
           " lower-cases (BertNormalizer lowercase or Lowercase): the model was trained on lower-cased text; give "
           "--cased=false (--do_lower_case=true)";
  if (!lowercases && !cased)
    return case_flag + " lower-cases the text, but the normalizer of " + tokenizer_json +
           " keeps the case: the model was trained on cased text; give --cased=true (--do_lower_case=false)";
  return "";
}

}  // namespace span_classifier
