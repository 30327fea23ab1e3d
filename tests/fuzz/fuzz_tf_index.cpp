// libFuzzer target: TensorFlow checkpoint index files (io::TfCheckpoint::parse_index, the
// SSTable blocks, the protobuf entries) and the BERT name mapping of every name parsed.
// Any input must give an Index or a ctdl::Error, never a crash, a sanitizer report, a hang
// or another exception type. Built with -DCTDL_FUZZ=ON and clang (tests/CMakeLists.txt):
//
//   build-fuzz/tests/fuzz_tf_index -max_total_time=600 tests/fuzz/corpus/tf_index
//
// (write new findings to a scratch copy of the corpus, not the committed one).
#include <ctdl/io/bert_names.hpp>
#include <ctdl/io/tf_checkpoint.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto index = ctdl::io::TfCheckpoint::parse_index(data, size, "fuzz.index");
    for (const auto& [name, entry] : index.entries) {
      const auto m = ctdl::io::map_google_bert_name(name);
      if (m.skipped() == m.skip_reason.empty()) __builtin_trap();  // a mapping is exactly one of the two
      if (entry.shard >= index.num_shards) __builtin_trap();
    }
  } catch (const ctdl::Error&) {
  }
  return 0;
}
