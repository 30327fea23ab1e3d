#pragma once
// ner_span_classifier: the span classifier of the original pipeline (run_ner_consensus.py)
// in C++: prepare features, train, evaluate, predict. main.cpp reads the flags and checks
// every input before any work; run<F, P>() does the work for one compiled BERT family F
// and precision policy P (one translation unit per family, compiled in parallel).

#include <cstdint>
#include <string>

#include <ctdl/data/labels.hpp>
#include <ctdl/models/bert/config.hpp>
#include <ctdl/text/tokenizer.hpp>

namespace span_classifier {

struct Args {
  bool do_prepare = false, do_train = false, do_eval = false, do_predict = false;
  std::string task_name = "consensus";
  std::string replace_span;  // "" = no replacement
  std::string init_checkpoint, vocab_file, bert_config_file, data_dir, output_dir, labels_dir;
  std::int64_t train_batch_size = 32, eval_batch_size = 8, predict_batch_size = 8, max_seq_length = 128;
  double learning_rate = 5e-5, num_train_epochs = 3.0, warmup_proportion = 0.1;
  std::int64_t save_checkpoints_steps = 1000, gradient_accumulation_steps = 1, log_every = 10;
  bool cased = false, use_fp16 = false, use_xla = false, distributed = false;
  std::string precision;  // fp32 | bf16 | fp16; "" = from --use_fp16
  std::string tokenizer_rules = "original";  // original | google (text::TokenizerRules)
  std::string phantom_class = "first";
  std::int64_t seed = 42, num_threads = 0;
  bool shuffle = true, dump_features = false, resume = false, skip_bad_rows = false;
  double max_grad_norm = 1.0;
};

/// Everything read and checked before work starts.
struct Setup {
  Args args;
  ctdl::bert::BertConfig config;
  const ctdl::text::FullTokenizer* tokenizer = nullptr;
  const ctdl::data::LabelSet* labels = nullptr;
  std::string checkpoint_file;  // model.safetensors to start from, or "" (random init)
};

template <class F, class P>
int run(const Setup& setup);

}  // namespace span_classifier
