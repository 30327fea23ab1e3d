// Replays fuzz inputs through a libFuzzer target's LLVMFuzzerTestOneInput without
// libFuzzer, so GCC builds (the sanitizer variant: ASan + UBSan) run the committed corpora
// too. Arguments: files or directories of inputs (every regular file, in name order); with
// none, the directories compiled in as CTDL_FUZZ_REPLAY_INPUTS (';'-separated). A crash or
// a sanitizer report fails the run; so does finding no input at all.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::vector<std::filesystem::path> inputs_of(const std::filesystem::path& p) {
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(p)) {
    for (const auto& e : std::filesystem::directory_iterator(p)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
  } else if (std::filesystem::is_regular_file(p)) {
    files.push_back(p);
  } else {
    std::fprintf(stderr, "fuzz replay: %s: no such file or directory\n", p.c_str());
  }
  return files;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> roots(argv + 1, argv + argc);
#if defined(CTDL_FUZZ_REPLAY_INPUTS)
  if (roots.empty()) {
    const std::string compiled_in = CTDL_FUZZ_REPLAY_INPUTS;
    for (std::size_t start = 0, end; start <= compiled_in.size(); start = end + 1) {
      end = std::min(compiled_in.find(';', start), compiled_in.size());
      if (end > start) roots.push_back(compiled_in.substr(start, end - start));
    }
  }
#endif
  std::size_t replayed = 0;
  for (const auto& root : roots) {
    for (const auto& file : inputs_of(root)) {
      std::ifstream in(file, std::ios::binary);
      const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (!in.eof() && in.fail()) {
        std::fprintf(stderr, "fuzz replay: %s: cannot be read\n", file.c_str());
        return 1;
      }
      LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
      ++replayed;
    }
  }
  if (replayed == 0) {
    std::fprintf(stderr, "fuzz replay: no inputs found\n");
    return 1;
  }
  std::printf("fuzz replay: %zu inputs replayed, none crashed\n", replayed);
  return 0;
}
