// ner_span_classifier: fine-tunes and applies a BERT span classifier, flag-compatible with
// the original run_ner_consensus.py (TensorFlow 1.15 + Horovod), whose defaults it keeps
// (batch 64, learning rate 5e-6, 10 epochs, cased text); with --task_name=ner, a token
// classifier as BioBERT's and NVIDIA's run_ner.py (CoNLL train/devel/test.tsv).
//
//   build/bin/ner_span_classifier --do_prepare --do_train --do_eval --do_predict
//       --task_name=consensus --vocab_file=vocab.txt --bert_config_file=bert_config.json
//       --init_checkpoint=model.safetensors --data_dir=data --labels_dir=labels
//       --output_dir=out --max_seq_length=128 --train_batch_size=32 --learning_rate=2e-5
//       --num_train_epochs=4     (a shorter recipe than the defaults)
//
// docs/span_classifier.md describes every flag, the inputs and the outputs.

#include <omp.h>

#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include "compiled_families.hpp"
#include "span_classifier.hpp"

#include <ctdl/data/conll.hpp>
#include <ctdl/data/fingerprint.hpp>
#include <ctdl/data/token_scheme.hpp>
#include <ctdl/dist/agreement.hpp>
#include <ctdl/dist/any_comm.hpp>
#if CTDL_WITH_MPI
#include <ctdl/dist/mpi.hpp>
#if CTDL_WITH_NCCL
#include <ctdl/dist/nccl.hpp>
#endif
#endif
#include <ctdl/io/atomic_file.hpp>
#include <ctdl/io/bert_tf_checkpoint.hpp>
#include <ctdl/precision/policy.hpp>
#include <ctdl/train/flags.hpp>

namespace span_classifier {
// run<F, P> on the CPU (instantiate.cpp.in) and run<F, P, Cuda> (instantiate_cuda.cu.in,
// a CUDA build); only those of the compiled families are ever named (compiled_families.hpp).
#define SPAN_CLASSIFIER_EXTERN(F)                                                     \
  extern template int run<F, ctdl::precision::Fp32>(const Setup&);                  \
  extern template int run<F, ctdl::precision::Bf16Mixed>(const Setup&);             \
  extern template int run<F, ctdl::precision::Fp16Mixed>(const Setup&);             \
  extern template int run<F, ctdl::precision::Fp32, ctdl::Cuda>(const Setup&);      \
  extern template int run<F, ctdl::precision::Bf16Mixed, ctdl::Cuda>(const Setup&); \
  extern template int run<F, ctdl::precision::Fp16Mixed, ctdl::Cuda>(const Setup&); \
  extern template int run<F, ctdl::precision::Tf32, ctdl::Cuda>(const Setup&);
SPAN_CLASSIFIER_EXTERN(ctdl::bert::Tiny)
SPAN_CLASSIFIER_EXTERN(ctdl::bert::Mini)
SPAN_CLASSIFIER_EXTERN(ctdl::bert::MiniLM)
SPAN_CLASSIFIER_EXTERN(ctdl::bert::Small)
SPAN_CLASSIFIER_EXTERN(ctdl::bert::Base)
SPAN_CLASSIFIER_EXTERN(ctdl::bert::Large)
SPAN_CLASSIFIER_EXTERN(ctdl::bert::Dynamic)
extern template int run_ner<ctdl::precision::Fp32>(const Setup&);
extern template int run_ner<ctdl::precision::Bf16Mixed>(const Setup&);
extern template int run_ner<ctdl::precision::Fp16Mixed>(const Setup&);
extern template int run_ner<ctdl::precision::Fp32, ctdl::Cuda>(const Setup&);
extern template int run_ner<ctdl::precision::Bf16Mixed, ctdl::Cuda>(const Setup&);
extern template int run_ner<ctdl::precision::Fp16Mixed, ctdl::Cuda>(const Setup&);
extern template int run_ner<ctdl::precision::Tf32, ctdl::Cuda>(const Setup&);
}  // namespace span_classifier

using namespace span_classifier;
using namespace ctdl;
namespace fs = std::filesystem;

namespace {

// What running on the runtime-shaped family costs, as the log says it (measured with
// bert_bench --family=both: docs/benchmarks.md).
constexpr const char* kDynamicFamilyCost =
    "the same results as a compiled family; as fast as a static family at BERT-base within measurement noise, docs/benchmarks.md";

/// printf to stderr for the person running the program: rank 0 only (quiet_rank).
[[gnu::format(printf, 1, 2)]] void note(const char* format, ...) {
  if (quiet_rank) return;
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
}

Args parse(int argc, char** argv, bool& help, std::map<std::string, std::string>& flag_values) {
  Args a;
  bool do_lower_case = false;  // the original's default (its value counts only when given)
  train::Flags f("ner_span_classifier");
  f.add("do_prepare", &a.do_prepare, "build the feature caches of every split present in --data_dir")
      .add("do_train", &a.do_train, "fine-tune on <data_dir>/train.tsv")
      .add("do_eval", &a.do_eval, "evaluate on <data_dir>/dev.tsv (ner: devel.tsv) -> eval_results.txt")
      .add("do_predict", &a.do_predict, "predict <data_dir>/test.tsv -> test_results.tsv, test_output_labels.txt (ner: NER_result_conll.txt, test_results.txt)")
      .add("write_npy", &a.write_npy, "with --do_predict, also write test_logits.npy (rows x labels) and test_pooled.npy (rows x hidden), float32")
      .add("task_name", &a.task_name, "consensus (span classification, run_ner_consensus.py) or ner (token classification of CoNLL files, BioBERT's run_ner.py; docs/span_classifier.md)")
      .add("ner_scheme", &a.ner_scheme,
           "with --task_name=ner: tensorflow (the default: NVIDIA's and BioBERT's TensorFlow run_ner.py, X, [CLS], "
           "[SEP] and padding classes, every position trained in batches --max_seq_length wide, sentences cut at 30 "
           "words; its checkpoints load) or first_piece (BioBERT's PyTorch recipe, Hugging Face's run_ner.py: each "
           "word's first piece carries its label, nothing else is trained)")
      .add("replace_span", &a.replace_span, "a vocabulary token that replaces every span (e.g. [unused1]); empty: keep the spans")
      .add("init_checkpoint", &a.init_checkpoint, "model.safetensors, or a directory holding one (e.g. an earlier --output_dir), or a TensorFlow 1.x checkpoint: its prefix (model.ckpt-N) or a directory holding TensorFlow's checkpoint file; empty: random initialisation")
      .add("vocab_file", &a.vocab_file, "vocab.txt or tokenizer.json (WordPiece) of the model; empty: the one beside --init_checkpoint")
      .add("bert_config_file", &a.bert_config_file, "bert_config.json of the model")
      .add("data_dir", &a.data_dir, "holds train.tsv, dev.tsv, test.tsv (whichever the modes need)")
      .add("output_dir", &a.output_dir, "feature caches, checkpoints, results and logs go here")
      .add("labels_dir", &a.labels_dir, "holds labels.txt (ner: optional; else the one beside --init_checkpoint, else the labels of train.tsv)")
      .add("train_batch_size", &a.train_batch_size, "rows per training step (per micro-batch with accumulation)")
      .add("eval_batch_size", &a.eval_batch_size, "rows per evaluation batch")
      .add("predict_batch_size", &a.predict_batch_size, "rows per prediction batch")
      .add("max_seq_length", &a.max_seq_length, "tokens per row, M (docs/data.md)")
      .add("learning_rate", &a.learning_rate, "peak learning rate of AdamW")
      .add("num_train_epochs", &a.num_train_epochs, "epochs (may be fractional)")
      .add("warmup_proportion", &a.warmup_proportion, "share of the steps with linear warmup")
      .add("save_checkpoints_steps", &a.save_checkpoints_steps, "also write <output_dir>/checkpoint-<step>/ every N steps (0: only at the end; --task_name=ner: 1000 by default, as its original)")
      .add("keep_checkpoint_max", &a.keep_checkpoint_max, "keep the newest N checkpoints (older ones are removed once a newer one is complete)")
      .add("gradient_accumulation_steps", &a.gradient_accumulation_steps, "micro-batches per optimizer step")
      .add("max_grad_norm", &a.max_grad_norm, "clip gradients to this global norm (0: no clipping)")
      .add("log_every", &a.log_every, "log a line every N steps")
      .add("cased", &a.cased, "true keeps the case, as the original by default (cased vocabularies: BioBERT); false lower-cases and strips accents (uncased vocabularies)")
      .add("do_lower_case", &do_lower_case, "the original's spelling of --cased=false (the inverse of --cased; giving both must agree)")
      .add("tokenizer_rules", &a.tokenizer_rules,
           "original (the original pipeline's tokenization.py: [UNK] above 100 characters, every C* category dropped) "
           "or google (Google's first BERT release: 200, Cc/Cf only)")
      .add("use_fp16", &a.use_fp16, "mixed precision: bf16 on the CPU, fp16 with loss scaling on a GPU (--precision overrides)")
      .add("precision", &a.precision, "fp32, bf16, fp16 or tf32 (overrides --use_fp16; fp16 uses dynamic loss scaling; tf32: fp32 with the GPU's products on TF32 tensor cores, fp32 on the CPU)")
      .add("use_xla", &a.use_xla, "accepted for compatibility; has no effect")
      .add("iterations_per_loop", &a.iterations_per_loop, "the original's TPU setting: accepted for compatibility; has no effect")
      .add("master", &a.master, "the original's TPU setting: accepted for compatibility; has no effect")
      .add("distributed", &a.distributed, "data parallel over the MPI ranks of mpirun or srun: each rank trains on its slice of every global batch (--train_batch_size rows per rank), evaluation and prediction split across them; rank 0 writes every output (docs/distributed.md)")
      .add("device", &a.device, "cpu, cuda or cuda:N: where the model trains and runs (cuda: a build with CUDA; docs/cuda.md)")
      .add("shard_optimizer", &a.shard_optimizer, "with --distributed: ZeRO stage 1, each rank holds 1/N of the optimizer state (the same steps)")
      .add("bucket_size_mb", &a.bucket_size_mb, "with --distributed: MiB of gradients fused per all-reduce (each starts during backward)")
      .add("phantom_class", &a.phantom_class, "which classifier row of a checkpoint with one class too many is dropped: last (the original's unused row) or first")
      .add("hidden_act", &a.hidden_act, "gelu_tanh or gelu_erf: overrides the GELU form (default: gelu_tanh for a TensorFlow checkpoint, whose modeling.py computes \"gelu\" with tanh; else as bert_config.json's hidden_act says)")
      .add("seed", &a.seed, "initialisation, shuffling and dropout")
      .add("num_threads", &a.num_threads, "threads (0: all cores)")
      .add("shuffle", &a.shuffle, "shuffle the training rows each epoch (false: file order)")
      .add("pad_to_max_length", &a.pad_to_max_length,
           "every batch --max_seq_length tokens wide, as the original pads (default: each batch as wide as its longest "
           "row, rounded up to a multiple of 8: the same outputs up to rounding, faster when rows are short)")
      .add("group_by_length", &a.group_by_length,
           "training batches of rows of similar length: each run of 50 shuffled batches sorted by length (Hugging Face's "
           "group_by_length), for less padding; evaluation and prediction always batch by length unless --pad_to_max_length")
      .add("dump_features", &a.dump_features, "with --do_prepare, also write <output_dir>/<split>_features.jsonl")
      .add("resume", &a.resume, "with --do_train: continue an interrupted run from the newest valid checkpoint in --output_dir (same flags)")
      .add("skip_bad_rows", &a.skip_bad_rows, "skip (and count) malformed rows instead of stopping");
  f.alias("horovod", "distributed");
  help = !f.parse(argc, argv);
  flag_values = f.values();
  if (help) std::printf("%s", f.help().c_str());
  // NVIDIA's run_ner.py saves every 1000 steps, run_ner_consensus.py every 10000.
  if (is_ner(a) && !f.given("save_checkpoints_steps")) a.save_checkpoints_steps = 1000;
  a.tpu_flags_given = f.given("iterations_per_loop") || f.given("master");
  const auto text = [](bool b) { return std::string(b ? "true" : "false"); };
  if (f.given("do_lower_case")) {
    if (f.given("cased") && a.cased == do_lower_case)
      throw train::FlagError("--cased=" + text(a.cased) + " and --do_lower_case=" + text(do_lower_case) +
                             " contradict each other (--do_lower_case is the inverse of --cased)");
    a.cased = !do_lower_case;
    a.case_flag = "--do_lower_case=" + text(do_lower_case);
  } else {
    a.case_flag = "--cased=" + text(a.cased) + (f.given("cased") ? "" : " (the default)");
  }
  return a;
}

void require_file(const std::string& path, const std::string& what) {
  if (path.empty()) throw Error("--" + what + " is required");
  if (!fs::is_regular_file(path)) throw Error(path + ": no such file (--" + what + ")");
}

/// Reads and checks every input; any problem stops here, before work starts.
/// The tokenizer and label set live in `tok` and `labels`; the Setup points at them.
Setup check(const Args& a, std::unique_ptr<text::FullTokenizer>& tok, std::unique_ptr<data::LabelSet>& labels) {
  if (!(a.do_prepare || a.do_train || a.do_eval || a.do_predict))
    throw Error("nothing to do: give at least one of --do_prepare, --do_train, --do_eval, --do_predict");
  if (a.write_npy && !a.do_predict) throw Error("--write_npy writes what --do_predict computes: give --do_predict too");
  const bool ner = is_ner(a);
  if (task_name(a) != "consensus" && !ner)
    throw Error("--task_name=" + a.task_name + ": the tasks are consensus (span classification) and ner (token classification)");
  if (ner) {
    if (a.write_npy) throw Error("--write_npy writes the consensus task's logits and pooled vectors; --task_name=ner has none");
    if (!a.replace_span.empty()) throw Error("--replace_span is a setting of the consensus task's spans; --task_name=ner has none");
    if (!a.ner_scheme.empty() && a.ner_scheme != "first_piece" && a.ner_scheme != "tensorflow")
      throw Error("--ner_scheme=" + a.ner_scheme + ": must be tensorflow or first_piece");
    if (a.ner_scheme != "first_piece" && a.group_by_length)
      throw Error("--ner_scheme=tensorflow (the default) trains on batches --max_seq_length wide (its loss averages "
                  "over every position, padding included); --group_by_length groups rows to cut padding: give "
                  "--ner_scheme=first_piece for it");
  } else if (!a.ner_scheme.empty()) {
    throw Error("--ner_scheme is a setting of --task_name=ner");
  }
  if ((a.shard_optimizer || a.bucket_size_mb != 25) && !a.distributed)
    throw Error("--shard_optimizer and --bucket_size_mb are settings of --distributed: give --distributed too");
  if (a.bucket_size_mb < 1) throw Error("--bucket_size_mb must be at least 1");
  if (a.group_by_length && a.pad_to_max_length)
    throw Error("--group_by_length groups rows so that batches need less padding; --pad_to_max_length pads them all to "
                "--max_seq_length: give one of them");
  if (a.resume && !a.do_train) throw Error("--resume continues a training run: give --do_train with it");
  if (a.phantom_class != "first" && a.phantom_class != "last") throw Error("--phantom_class must be first or last");
  if (a.tokenizer_rules != "original" && a.tokenizer_rules != "google")
    throw Error("--tokenizer_rules=" + a.tokenizer_rules + ": must be original or google");
  for (auto [v, name] : {std::pair{a.train_batch_size, "train_batch_size"}, {a.eval_batch_size, "eval_batch_size"},
                         {a.predict_batch_size, "predict_batch_size"}, {a.gradient_accumulation_steps, "gradient_accumulation_steps"},
                         {a.log_every, "log_every"}, {a.keep_checkpoint_max, "keep_checkpoint_max"}})
    if (v < 1) throw Error(std::string("--") + name + " must be at least 1");
  if (a.max_seq_length < 3) throw Error("--max_seq_length must be at least 3");
  // Without --vocab_file, the vocabulary beside the checkpoint (as Hugging Face keeps it in
  // the model's directory, and save_model writes it).
  std::string vocab_file = a.vocab_file;
  if (vocab_file.empty() && !a.init_checkpoint.empty()) {
    const fs::path dir = fs::is_directory(a.init_checkpoint) ? fs::path(a.init_checkpoint) : fs::path(a.init_checkpoint).parent_path();
    for (const char* name : {"vocab.txt", "tokenizer.json"})
      if (fs::is_regular_file(dir / name)) {
        vocab_file = (dir / name).string();
        break;
      }
    if (vocab_file.empty())
      throw Error("--vocab_file is required: there is no vocab.txt or tokenizer.json beside --init_checkpoint " +
                  a.init_checkpoint + " (in " + (dir.empty() ? std::string(".") : dir.string()) + ")");
    note("vocabulary: %s (beside --init_checkpoint; --vocab_file not given)\n", vocab_file.c_str());
  }
  require_file(vocab_file, "vocab_file");
  require_file(a.bert_config_file, "bert_config_file");
  if (a.data_dir.empty() || !fs::is_directory(a.data_dir)) throw Error("--data_dir: '" + a.data_dir + "' is not a directory");
  // The NER task's labels: --labels_dir's; else those of the model it continues (a ctdl
  // output directory keeps labels.txt); else the labels train.tsv uses (below, once
  // --output_dir exists: written there).
  std::string labels_file;
  if (!a.labels_dir.empty() || !ner) {
    if (a.labels_dir.empty()) throw Error("--labels_dir is required (the directory of labels.txt)");
    require_file(a.labels_dir + "/labels.txt", "labels_dir");
    labels_file = a.labels_dir + "/labels.txt";
  } else if (!a.init_checkpoint.empty()) {
    const fs::path dir = fs::is_directory(a.init_checkpoint) ? fs::path(a.init_checkpoint) : fs::path(a.init_checkpoint).parent_path();
    if (fs::is_regular_file(dir / "labels.txt")) {
      labels_file = (dir / "labels.txt").string();
      note("labels: %s (beside --init_checkpoint; --labels_dir not given)\n", labels_file.c_str());
    }
  }
  if (labels_file.empty() && !fs::is_regular_file(a.data_dir + "/train.tsv"))
    throw Error("--labels_dir is required: there is no labels.txt beside --init_checkpoint and no " + a.data_dir +
                "/train.tsv to take the labels from");
  if (a.output_dir.empty()) throw Error("--output_dir is required");
  for (auto [mode, split, flag] : {std::tuple{a.do_train, "train", "train"}, {a.do_eval, ner ? "devel" : "dev", "eval"},
                                   {a.do_predict, "test", "predict"}})
    if (mode && !fs::is_regular_file(a.data_dir + "/" + split + ".tsv"))
      throw Error(a.data_dir + "/" + split + ".tsv: no such file (needed by --do_" + flag + ")");

  Setup s;
  s.args = a;
  s.args.vocab_file = vocab_file;
  if (ner && s.args.ner_scheme.empty()) s.args.ner_scheme = "tensorflow";  // the original's
  // --use_fp16, the original's flag: fp16 with loss scaling on a GPU (as its TF AMP), bf16
  // on the CPU (which has bf16 products and no fast fp16 ones).
  const bool on_gpu = a.device.rfind("cuda", 0) == 0;
  if (s.args.precision.empty()) s.args.precision = !a.use_fp16 ? "fp32" : on_gpu ? "fp16" : "bf16";
  if (s.args.precision != "fp32" && s.args.precision != "bf16" && s.args.precision != "fp16" &&
      s.args.precision != "tf32")
    throw Error("--precision must be fp32, bf16, fp16 or tf32");
  s.config = bert::BertConfig::from_file(a.bert_config_file);
  if (a.max_seq_length > s.config.max_position_embeddings)
    throw Error("--max_seq_length " + std::to_string(a.max_seq_length) + " is above max_position_embeddings " +
                std::to_string(s.config.max_position_embeddings) + " of " + a.bert_config_file);
  const bool tokenizer_json = text::Vocab::is_tokenizer_json(vocab_file);
  tok = std::make_unique<text::FullTokenizer>(
      text::Vocab::from_vocab_or_tokenizer_json(vocab_file),
      text::FullTokenizer::Options{.lower_case = !a.cased, .rules = text::parse_tokenizer_rules(a.tokenizer_rules)});
  if (static_cast<index_t>(tok->vocab().size()) != s.config.vocab_size)
    throw Error(vocab_file + " has " + std::to_string(tok->vocab().size()) + " tokens but " + a.bert_config_file +
                " says vocab_size " + std::to_string(s.config.vocab_size) + ": they are not the same model's");
  if (!a.replace_span.empty()) tok->vocab().require(a.replace_span, "--replace_span token");
  if (const auto w = vocab_case_warning(tok->vocab(), a.cased, a.case_flag); !w.empty())
    note("warning: %s\n", w.c_str());
  if (tokenizer_json)
    if (const auto w = tokenizer_case_warning(vocab_file, text::Vocab::tokenizer_json_lowercases(vocab_file), a.cased, a.case_flag);
        !w.empty())
      note("warning: %s\n", w.c_str());
  if (!labels_file.empty()) labels = std::make_unique<data::LabelSet>(data::LabelSet::from_file(labels_file));
  s.tokenizer = tok.get();
  s.labels = labels.get();
  if (!a.init_checkpoint.empty()) {
    // A directory with model.safetensors (ctdl's own outputs) is that; otherwise a
    // TensorFlow checkpoint (X with X.index, or a directory of TensorFlow's) if it is one.
    const std::string in_dir = a.init_checkpoint + "/model.safetensors";
    std::optional<std::string> tf;
    if (!(fs::is_directory(a.init_checkpoint) && fs::is_regular_file(in_dir))) tf = io::find_tf_checkpoint(a.init_checkpoint);
    if (tf) {
      s.checkpoint_file = *tf;
      s.checkpoint_is_tf = true;
    } else {
      const std::string ckpt = fs::is_directory(a.init_checkpoint) ? in_dir : a.init_checkpoint;
      if (!fs::is_regular_file(ckpt))
        throw Error(ckpt + ": no such file (--init_checkpoint: model.safetensors, a directory holding one, or a "
                    "TensorFlow checkpoint prefix X with X.index)");
      s.checkpoint_file = ckpt;
    }
  }
  // The GELU form: Google's modeling.py computes "gelu" with tanh, Hugging Face's "gelu" is
  // erf, and both write "gelu" into bert_config.json; what the weights were trained with
  // follows from where they come from.
  const auto act_name = [](bert::Activation act) { return act == bert::Activation::gelu_tanh ? "gelu_tanh" : "gelu_erf"; };
  if (!a.hidden_act.empty()) {
    if (a.hidden_act != "gelu_tanh" && a.hidden_act != "gelu_erf")
      throw Error("--hidden_act=" + a.hidden_act + ": must be gelu_tanh or gelu_erf");
    s.config.hidden_act = a.hidden_act == "gelu_tanh" ? bert::Activation::gelu_tanh : bert::Activation::gelu_erf;
    note("activation: %s (--hidden_act)\n", a.hidden_act.c_str());
  } else if (s.checkpoint_is_tf) {
    if (s.config.hidden_act != bert::Activation::gelu_tanh)
      note("activation: gelu_tanh, not %s's %s: the weights come from a TensorFlow checkpoint, whose "
                   "modeling.py computes \"gelu\" as the tanh approximation (--hidden_act=gelu_erf overrides)\n",
                   a.bert_config_file.c_str(), act_name(s.config.hidden_act));
    else
      note("activation: gelu_tanh (a TensorFlow checkpoint; %s agrees)\n", a.bert_config_file.c_str());
    s.config.hidden_act = bert::Activation::gelu_tanh;
  } else {
    note("activation: %s, as %s's hidden_act says (Hugging Face's reading; --hidden_act overrides)\n",
                 act_name(s.config.hidden_act), a.bert_config_file.c_str());
  }
  // Rank 0 alone touches the output directory here: another node's rank would take rank
  // 0's temporary files for ones whose process is gone (a pid is one node's).
  if (!quiet_rank) {
    fs::create_directories(a.output_dir);
    // What a killed run left half-written (*.tmp.<pid> of a process that is gone).
    for (const auto& stale : io::remove_stale_temporaries(a.output_dir))
      note("removed %s (left by an interrupted run)\n", stale.c_str());
  }
  if (!labels) {  // the NER task's labels from train.tsv, saved as labels.txt with the model
    const auto found = data::collect_conll_labels(a.data_dir + "/train.tsv", {.skip_bad_rows = a.skip_bad_rows});
    std::string text, list;
    for (const auto& n : found.names()) text += n + "\n", list += (list.empty() ? "" : ", ") + n;
    // Pending until a model is saved (labels.txt of an earlier model there stays as it is
    // until then); the other ranks save nothing, and name the file rank 0 keeps.
    if (!quiet_rank) s.pending_labels = std::make_shared<const io::PendingFile>(a.output_dir + "/labels.txt", text);
    const std::string path = s.pending_labels ? s.pending_labels->path() : a.output_dir + "/labels.txt";
    labels = std::make_unique<data::LabelSet>(found.names(), path);
    note("labels: %s (those of %s/train.tsv%s)\n", list.c_str(), a.data_dir.c_str(),
         a.do_train ? "; saved as labels.txt with the model" : "");
    s.labels_origin = a.data_dir + "/train.tsv (its labels)";
  } else {
    s.labels_origin = labels->source();
  }
  s.labels = labels.get();
  if (ner && s.args.ner_scheme == "tensorflow") {
    // The recipe's extra classes must not be labels already, and its sentence cut and its
    // filler for words without a prediction are "O".
    for (const char* extra : {"X", "[CLS]", "[SEP]", "[padding]"})
      if (labels->find(extra))
        throw Error(std::string("--ner_scheme=tensorflow adds the classes X, [CLS], [SEP] and padding, but ") +
                    s.labels_origin + " already has the label " + extra);
    if (!labels->find("O"))
      throw Error("--ner_scheme=tensorflow cuts long sentences after an \"O\" and predicts \"O\" for words left "
                  "without a label, but " + s.labels_origin + " has no label O");
    note("NER scheme: tensorflow (%s; NVIDIA's and BioBERT's TensorFlow run_ner.py): %zu classes, sentences cut at "
         "30 words, training batches --max_seq_length wide\n",
         a.ner_scheme.empty() ? "the default" : "--ner_scheme", labels->size() + data::kTensorflowExtraClasses);
  } else if (ner) {
    note("NER scheme: first_piece (BioBERT's PyTorch recipe, Hugging Face's run_ner.py): %zu classes, each word "
         "scored at its first piece\n", labels->size());
  }
  if (a.use_xla) note("--use_xla has no effect in ctdl (the kernels are compiled ahead of time)\n");
  if (a.tpu_flags_given)
    note("--iterations_per_loop and --master have no effect in ctdl (TPU settings of the original)\n");
  return s;
}

/// What every rank of a --distributed run must have alike: every flag but
/// --num_threads, the config, vocabulary and labels (their bytes' XXH64) and the sizes
/// of the data files and of the checkpoint.
std::map<std::string, std::string> agreement_settings(const Setup& s, std::map<std::string, std::string> flags) {
  flags.erase("num_threads");  // threads change no result
  std::map<std::string, std::string> out;
  for (auto& [name, value] : flags) out["--" + name] = std::move(value);
  const auto hash = [](const std::string& path) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(data::file_fingerprint(path)));
    return std::string(b) + " (XXH64 of " + path + ")";
  };
  const auto size = [](const std::string& path) {
    std::error_code ec;
    const auto n = fs::file_size(path, ec);
    return ec ? std::string("absent") : std::to_string(n) + " bytes";
  };
  out["bert_config.json"] = hash(s.args.bert_config_file);
  out["vocabulary"] = hash(s.args.vocab_file);
  const bool ner = is_ner(s.args);
  if (ner) {  // the names: labels found in train.tsv have no file on the other ranks' machines
    std::string names;
    for (const auto& n : s.labels->names()) names += n + "\n";
    out["labels"] = names;
  } else {
    out["labels.txt"] = hash(s.labels->source());
  }
  for (const char* split : {"train", ner ? "devel" : "dev", "test"})
    out[std::string(split) + ".tsv"] = size(s.args.data_dir + "/" + split + ".tsv");
  if (!s.checkpoint_file.empty())
    out["--init_checkpoint"] = size(s.checkpoint_is_tf ? s.checkpoint_file + ".index" : s.checkpoint_file);
  return out;
}

/// The run on a CUDA device: the NER task's (the runtime-shaped family), or the consensus
/// task's for the families this build compiled for CUDA (CTDL_SPAN_CLASSIFIER_CUDA_FAMILIES;
/// the runtime-shaped Dynamic by default, which runs every shape: its kernels take every
/// width at run time, as the static families' do).
int work_on_cuda(Setup& s, const DeviceSpec& device) {
  const auto& a = s.args;
  if (!compiled_cuda) {
    throw Error("--device=" + a.device + ": this build of ner_span_classifier has no CUDA (configure with "
                "-DCTDL_WITH_CUDA=ON; docs/cuda.md)");
  }
  // A --distributed run of several ranks chose each rank's GPU and made NCCL already.
  if (s.device_name.empty()) s.device_name = use_cuda_device(device.ordinal);  // a missing or busy device stops here
  // --distributed --shard_optimizer on one rank: ZeRO-1 moves the gradients and weights of
  // a model on the GPU over NCCL, here a communicator of that one rank.
#if CTDL_WITH_MPI && CTDL_WITH_NCCL
  std::optional<dist::NcclComm> nccl;
  std::optional<dist::AnyComm> nccl_any;
  if (a.shard_optimizer && !s.device_comm) {
    nccl.emplace(device.ordinal);
    nccl_any.emplace(*nccl);
    s.device_comm = &*nccl_any;
  }
#else
  if (a.shard_optimizer)
    throw Error("--shard_optimizer with --device=" + a.device + ": ZeRO-1 on a GPU moves its data over NCCL, and "
                "this build of ner_span_classifier has no NCCL (CMake found none beside the CUDA toolkit)");
#endif
  // `if constexpr` and templates, so that a build without the CUDA instances never names them.
  if (is_ner(a)) {  // the runtime-shaped family, whatever the shape (run_ner.hpp)
    if constexpr (compiled_cuda) {
      if (a.precision == "bf16") return run_ner<precision::Bf16Mixed, Cuda>(s);
      if (a.precision == "fp16") return run_ner<precision::Fp16Mixed, Cuda>(s);
      if (a.precision == "tf32") return run_ner<precision::Tf32, Cuda>(s);
      return run_ner<precision::Fp32, Cuda>(s);
    }
  }
  const auto run_policy = [&]<class F>() -> int {
    if (a.precision == "bf16") return run<F, precision::Bf16Mixed, Cuda>(s);
    if (a.precision == "fp16") return run<F, precision::Fp16Mixed, Cuda>(s);
    if (a.precision == "tf32") return run<F, precision::Tf32, Cuda>(s);
    return run<F, precision::Fp32, Cuda>(s);
  };
  return bert::dispatch(s.config, [&]<class F>() -> int {
    if constexpr (compiled_cuda_family<F>) return run_policy.template operator()<F>();
    else if constexpr (compiled_cuda_family<bert::Dynamic>) return run_policy.template operator()<bert::Dynamic>();
    else
      throw Error("--device=" + a.device + ": this build compiled the CUDA run for " + compiled_cuda_family_names +
                  " only, neither the family of " + bert::shape_name(s.config) + " nor Dynamic (CMake option "
                  "CTDL_SPAN_CLASSIFIER_CUDA_FAMILIES)");
  });
}

/// A GPU chosen for this rank by work_on_gpus: its number, its name and NCCL over the ranks.
struct RankGpu {
  int ordinal = 0;
  std::string name;
  dist::AnyComm* comm = nullptr;
};

/// Everything after the flags, on one process or on every rank of `comm`.
int work(const Args& a, const std::map<std::string, std::string>& flag_values, dist::AnyComm& comm,
         const RankGpu* gpu = nullptr) {
  if (a.num_threads > 0) omp_set_num_threads(static_cast<int>(a.num_threads));
  std::unique_ptr<text::FullTokenizer> tok;
  std::unique_ptr<data::LabelSet> labels;
  Setup s = check(a, tok, labels);
  s.comm = &comm;
  DeviceSpec device = DeviceSpec::parse(a.device);
  if (gpu) {
    device.ordinal = gpu->ordinal;
    s.device_name = gpu->name;
    s.device_comm = gpu->comm;
  }
  if (comm.size() > 1) {
    dist::require_same_on_all_ranks(comm, agreement_settings(s, flag_values));
    if (gpu) {
      note("distributed: %d ranks, one GPU each (rank r of a machine on its GPU r); gradients and weights over NCCL, "
           "the rest over MPI; a training step takes %lld rows (--train_batch_size %lld per rank)%s\n",
           comm.size(), static_cast<long long>(a.train_batch_size * comm.size()),
           static_cast<long long>(a.train_batch_size), a.shard_optimizer ? "; the optimizer state sharded (ZeRO-1)" : "");
    } else {
      note("distributed: %d ranks (MPI), %d threads each; a training step takes %lld rows (--train_batch_size %lld "
           "per rank)%s\n",
           comm.size(), omp_get_max_threads(), static_cast<long long>(a.train_batch_size * comm.size()),
           static_cast<long long>(a.train_batch_size),
           a.shard_optimizer ? "; the optimizer state sharded (ZeRO-1)" : "");
    }
  }
  if (device.cuda) return work_on_cuda(s, device);
  if (s.args.precision == "tf32") {
    note("--precision=tf32 on the CPU is fp32 (TF32 is a GPU tensor-core format; CPUs have none)\n");
    s.args.precision = "fp32";
  }
  if (is_ner(s.args)) {  // the runtime-shaped family, whatever the shape (run_ner.hpp)
    if (s.args.precision == "bf16") return run_ner<precision::Bf16Mixed>(s);
    if (s.args.precision == "fp16") return run_ner<precision::Fp16Mixed>(s);
    return run_ner<precision::Fp32>(s);
  }
  const auto run_policy = [&]<class F>() -> int {
    if (s.args.precision == "bf16") return run<F, precision::Bf16Mixed>(s);
    if (s.args.precision == "fp16") return run<F, precision::Fp16Mixed>(s);
    return run<F, precision::Fp32>(s);
  };
  // A static family when the shape has one and this build compiled it; else the
  // runtime-shaped family (same results, a slower step), when this build compiled that.
  return bert::dispatch(s.config, [&]<class F>() -> int {
    const std::string shape = bert::shape_name(s.config) + " (hidden/heads/intermediate of " + a.bert_config_file + ")";
    if constexpr (compiled_family<F>) {
      if constexpr (F::is_dynamic)
        note("no compiled BERT family for %s: using the runtime-shaped family (%s)\n", shape.c_str(),
             kDynamicFamilyCost);
      return run_policy.template operator()<F>();
    } else if constexpr (compiled_family<bert::Dynamic>) {
      note("this build of ner_span_classifier did not compile the BERT family of %s; it compiled %s: "
           "using the runtime-shaped family (%s)\n", shape.c_str(), compiled_family_names, kDynamicFamilyCost);
      return run_policy.template operator()<bert::Dynamic>();
    } else {
      throw Error(a.bert_config_file + " is a BERT of hidden/heads/intermediate " + bert::shape_name(s.config) + ", " +
                  (F::is_dynamic ? std::string("a shape with no static family (") + bert::kStaticFamilies + ")"
                                 : std::string("a static family")) +
                  ", but this build of ner_span_classifier compiled only the families " + compiled_family_names +
                  ", not it nor the runtime-shaped family Dynamic that runs any shape (CMake option "
                  "CTDL_SPAN_CLASSIFIER_FAMILIES: its `default` (Tiny, Base and Dynamic, what scripts/build.sh "
                  "builds) and `all` include Dynamic; scripts/demo.sh builds Dynamic alone)");
    }
  });
}

#if CTDL_WITH_MPI
/// --distributed --device=cuda on several ranks: one GPU per rank, rank r of a machine on
/// its GPU r (as the original's Horovod runs pin hvd.local_rank()); the model's weights
/// and gradients move over NCCL, everything else over MPI.
int work_on_gpus(const Args& a, const std::map<std::string, std::string>& flag_values, dist::MpiComm& mpi,
                 dist::AnyComm& comm) {
  const std::string ranks = std::to_string(mpi.size()) + " ranks";
  if (a.device != "cuda")
    throw Error("--device=" + a.device + " with --distributed on " + ranks + ": give --device=cuda (rank r of a "
                "machine takes its GPU r; CUDA_VISIBLE_DEVICES chooses which GPUs a machine offers)");
  if (!compiled_cuda)
    throw Error("--device=cuda: this build of ner_span_classifier has no CUDA (configure with -DCTDL_WITH_CUDA=ON; "
                "docs/cuda.md)");
#if CTDL_WITH_NCCL
  const auto place = mpi.node_place();
  RankGpu gpu;
  gpu.ordinal = place.rank;
  try {
    gpu.name = use_cuda_device(place.rank);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + "; this is rank " + std::to_string(place.rank) + " of the " +
                std::to_string(place.size) + " ranks on its machine: run at most one rank per GPU of a machine "
                "(mpirun --npernode, srun --ntasks-per-node)");
  }
  dist::NcclComm nccl(mpi, place.rank);
  dist::AnyComm device_comm(nccl);
  gpu.comm = &device_comm;
  return work(a, flag_values, comm, &gpu);
#else
  (void)flag_values, (void)comm;
  throw Error("--distributed with --device=cuda on " + ranks + ": this build of ner_span_classifier has no NCCL "
              "(CMake found none beside the CUDA toolkit: install NCCL, e.g. NVIDIA's libnccl-dev, and build again)");
#endif
}
#endif

}  // namespace

int main(int argc, char** argv) {
  // Past a file-size limit (ulimit -f) a write fails with EFBIG, reported naming the file,
  // instead of SIGXFSZ killing the program without a word.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    bool help = false;
    std::map<std::string, std::string> flag_values;
    const Args a = parse(argc, argv, help, flag_values);
    if (help) return 0;
    if (!a.distributed) {
      dist::LocalComm local;
      dist::AnyComm comm(local);
      return work(a, flag_values, comm);
    }
#if CTDL_WITH_MPI
    // One process of an mpirun/srun job: a failure on any rank ends the whole job
    // (MPI_Abort, through run_or_abort), never leaving the others waiting.
    dist::MpiEnvironment mpi(argc, argv);
    dist::MpiComm mpi_comm(mpi);
    quiet_rank = mpi_comm.rank() != 0;
    return dist::run_or_abort(mpi_comm, [&] {
      dist::AnyComm comm(mpi_comm);
      if (mpi_comm.size() > 1 && DeviceSpec::parse(a.device).cuda) return work_on_gpus(a, flag_values, mpi_comm, comm);
      return work(a, flag_values, comm);
    });
#else
    throw Error("--distributed/--horovod: this build of ner_span_classifier has no MPI (CMake found none: install "
                "Open MPI, e.g. Debian's libopenmpi-dev as scripts/setup-deps.sh does, and build again)");
#endif
  } catch (const train::FlagError& e) {
    std::fprintf(stderr, "ner_span_classifier: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ner_span_classifier: %s\n", e.what());
    return 1;
  }
}
