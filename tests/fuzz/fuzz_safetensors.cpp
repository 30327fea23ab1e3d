// libFuzzer target: the safetensors header parser (io::SafetensorsFile::from_bytes) on
// arbitrary bytes. Any input must either open, with every tensor's bytes inside the input,
// or throw ctdl::Error; a crash, a sanitizer report, a hang or another exception type is a
// bug. Built only with -DCTDL_FUZZ=ON and clang (tests/CMakeLists.txt says how to run it).
#include <ctdl/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = ctdl::io::SafetensorsFile::from_bytes(std::span<const unsigned char>(data, size), "<fuzz>");
    for (const auto& name : file.names()) {
      const auto& e = file.at(name);
      // Every byte the header claims is read: AddressSanitizer reports any outside the input.
      unsigned sum = 0;
      for (std::size_t i = 0; i < e.bytes; ++i) sum += e.data[i];
      if (sum == 0xFFFFFFFFu) __builtin_trap();  // keeps the loop; never true for real inputs
      // And the conversion path, for the dtypes ctdl reads.
      if (e.shape.size() == 1 && e.shape[0] <= 1 << 16 &&
          (e.dtype == "F32" || e.dtype == "F16" || e.dtype == "BF16" || e.dtype == "F64" || e.dtype == "I32" ||
           e.dtype == "I64"))
        (void)file.tensor<float, ctdl::Shape<ctdl::dyn>>(name);
    }
    (void)file.metadata();
  } catch (const ctdl::Error&) {
    // A refused input, as it should be: the message is not checked here (the unit tests do).
  }
  return 0;
}
