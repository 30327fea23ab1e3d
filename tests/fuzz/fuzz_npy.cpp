// libFuzzer target: the .npy header check and reader (io::tensor_from_npy,
// io::parse_npy_header) on arbitrary bytes. Any input must either read, with every element
// inside the input, or throw ctdl::Error; a crash, a sanitizer report, a hang or another
// exception type is a bug. Built only with -DCTDL_FUZZ=ON and clang (tests/CMakeLists.txt).
#include <ctdl/io/npy.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto h = ctdl::io::parse_npy_header(bytes, "<fuzz>");
    if (h.data_offset + h.data_bytes != size) __builtin_trap();  // the check's contract
    // The readers of each rank a header may ask for, within a size that keeps runs fast.
    if (h.data_bytes <= 1 << 16) {
      if (h.shape.size() == 1) (void)ctdl::io::tensor_from_npy<float, ctdl::Shape<ctdl::dyn>>(bytes, "<fuzz>");
      if (h.shape.size() == 2) (void)ctdl::io::tensor_from_npy<std::int64_t, ctdl::Shape<ctdl::dyn, ctdl::dyn>>(bytes, "<fuzz>");
      if (h.shape.size() == 2) (void)ctdl::io::tensor_from_npy<double, ctdl::Shape<ctdl::dyn, 3>>(bytes, "<fuzz>");
    }
  } catch (const ctdl::Error&) {
    // A refused input, as it should be: the message is not checked here (the unit tests do).
  }
  return 0;
}
