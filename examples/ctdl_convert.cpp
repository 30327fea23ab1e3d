// ctdl-convert: lists checkpoints, and converts a TensorFlow 1.x BERT checkpoint (Google's
// names, as BioBERT and run_ner_consensus.py write them) to model.safetensors with
// Hugging Face names.
//
//   build/bin/ctdl-convert --list model.ckpt-1000          name, dtype, shape of each tensor
//   build/bin/ctdl-convert --list model.safetensors
//   build/bin/ctdl-convert model.ckpt-1000 out/model.safetensors --bert_config_file bert_config.json
//
// A TF checkpoint is given as its prefix (X with X.index beside it) or a directory holding
// TensorFlow's `checkpoint` file or model.ckpt-N.index files (the newest is taken). The
// conversion checks every tensor's shape against the config, lists what it skips
// (optimizer state, global_step, pre-training heads, unknown names) and writes the file
// atomically (a failure leaves no partial output). docs/checkpoints.md has the details.

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <ctdl/io/bert_tf_checkpoint.hpp>

namespace {

using namespace ctdl;

std::string shape_text(const std::vector<index_t>& shape) { return format_extents(shape.data(), shape.size()); }

/// The TF prefix `path` denotes, or an Error saying what was looked for.
std::string tf_prefix(const std::string& path) {
  if (auto p = io::find_tf_checkpoint(path)) return *p;
  throw Error(path + ": not a TensorFlow checkpoint (no " + path + ".index, and not a directory holding a `checkpoint` "
              "file or model.ckpt-N.index files)");
}

void list(const std::string& path) {
  std::size_t n = 0;
  if (std::filesystem::is_regular_file(path) && !std::filesystem::is_regular_file(path + ".index")) {
    const io::SafetensorsFile f(path);
    for (const auto& name : f.names()) {
      const auto& e = f.at(name);
      std::printf("%s\t%s\t%s\n", name.c_str(), e.dtype.c_str(), shape_text(e.shape).c_str());
      ++n;
    }
    for (const auto& [k, v] : f.metadata()) std::fprintf(stderr, "metadata %s: %s\n", k.c_str(), v.c_str());
    std::fprintf(stderr, "%s: %zu tensors (safetensors)\n", path.c_str(), n);
  } else {
    const io::TfCheckpoint ckpt(tf_prefix(path));
    for (const auto& name : ckpt.names()) {
      const auto& e = ckpt.at(name);
      std::printf("%s\t%s\t%s\n", name.c_str(), e.dtype.c_str(), shape_text(e.shape).c_str());
      ++n;
    }
    std::fprintf(stderr, "%s: %zu tensors (TensorFlow checkpoint, %d shard(s))\n", ckpt.path().c_str(), n, ckpt.num_shards());
  }
  io::check_stream_written(stdout, "stdout");
}

void convert(const std::string& in, const std::string& out, const std::string& config_file) {
  const auto config = bert::BertConfig::from_file(config_file);
  const io::BertTfCheckpoint ckpt(tf_prefix(in));
  if (const auto parent = std::filesystem::path(out).parent_path(); !parent.empty()) std::filesystem::create_directories(parent);
  // Optimizer state is listed by kind (a BERT-base checkpoint has hundreds of slots);
  // every other skipped tensor by name.
  std::map<std::string, std::pair<std::size_t, std::string>> by_reason;  // reason -> (count, first name)
  for (const auto& s : ckpt.skipped()) {
    if (s.reason.starts_with("optimizer state")) {
      auto& [count, first] = by_reason[s.reason];
      if (count++ == 0) first = s.name;
    } else {
      std::fprintf(stderr, "skipped %s (%s)\n", s.name.c_str(), s.reason.c_str());
    }
  }
  for (const auto& [reason, cf] : by_reason)
    std::fprintf(stderr, "skipped %zu tensors such as %s (%s)\n", cf.first, cf.second.c_str(), reason.c_str());
  const auto written = io::write_bert_safetensors(
      ckpt, config, out,
      {{"format", "pt"},
       {"made_by", "ctdl-convert"},
       {"source", std::filesystem::absolute(ckpt.path()).string()},
       {"source_format", "TensorFlow 1.x checkpoint (Google BERT names)"},
       {"source_hidden_act", "gelu_tanh (modeling.py's gelu)"}});
  std::fprintf(stderr, "wrote %s: %zu tensors (Hugging Face names) from %s\n", out.c_str(), written.size(),
               ckpt.path().c_str());
  if (!ckpt.contains("classifier.weight"))
    std::fprintf(stderr, "note: the checkpoint has no classifier (output_weights): a program starts it fresh\n");
  if (config.hidden_act == bert::Activation::gelu_erf)
    std::fprintf(stderr,
                 "note: %s says hidden_act \"gelu\", which Hugging Face (and ctdl, for safetensors) read as the erf "
                 "GELU, but this model was trained with modeling.py's tanh GELU: run it with --hidden_act=gelu_tanh "
                 "(ner_span_classifier), or set \"hidden_act\": \"gelu_new\" in the config beside the converted file\n",
                 config_file.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string list_path, in, out, config_file;
  CLI::App app{"Lists checkpoints; converts a TensorFlow 1.x BERT checkpoint to safetensors (Hugging Face names)"};
  app.add_option("--list", list_path, "print name, dtype and shape of each tensor of a TF checkpoint (prefix or "
                                      "directory) or a safetensors file, one a line, tab-separated");
  app.add_option("input", in, "TensorFlow checkpoint: prefix (model.ckpt-N) or directory");
  app.add_option("output", out, "the safetensors file to write");
  app.add_option("--bert_config_file", config_file, "bert_config.json of the checkpoint (shapes are checked against it)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!list_path.empty()) {
      if (!in.empty() || !out.empty()) throw CLI::ValidationError("--list takes no input/output arguments");
      list(list_path);
      return 0;
    }
    if (in.empty() || out.empty()) throw CLI::ValidationError("give --list CKPT, or INPUT OUTPUT --bert_config_file FILE");
    if (config_file.empty()) throw CLI::ValidationError("--bert_config_file is required to convert");
    convert(in, out, config_file);
    return 0;
  } catch (const CLI::Error& e) {
    std::fprintf(stderr, "ctdl-convert: %s (--help lists the options)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ctdl-convert: %s\n", e.what());
    return 1;
  }
}
