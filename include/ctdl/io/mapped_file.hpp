#pragma once
// MappedFile: a whole file mapped read-only into memory (RAII).
//
// Shared by the safetensors reader and the feature cache. `release(begin, end)` tells the
// kernel the pages of a byte range are no longer needed, so a long pass over a large file
// does not keep it resident (the process's RSS stays bounded; the page cache still holds
// the data for the next read).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include "ctdl/core/error.hpp"

namespace ctdl::io {

class MappedFile {
 public:
  MappedFile() = default;

  /// Maps `path`; an error names the file and the system's reason.
  explicit MappedFile(std::string path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path_ + ": cannot open (" + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      throw Error(path_ + ": cannot stat (" + std::strerror(err) + ")");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (map == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw Error(path_ + ": cannot map into memory (" + std::strerror(err) + ")");
      }
      data_ = static_cast<const unsigned char*>(map);
    }
    ::close(fd);
  }

  ~MappedFile() { unmap(); }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept
      : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }

  const std::string& path() const { return path_; }
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }

  /// Hints that [begin, end) will be read front to back.
  void advise_sequential() const {
    if (data_) ::madvise(const_cast<unsigned char*>(data_), size_, MADV_SEQUENTIAL);
  }

  /// Drops the whole pages inside [begin, end) from this process's resident set.
  void release(std::size_t begin, std::size_t end) const {
    if (!data_) return;
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    begin = (begin + page - 1) / page * page;
    end = std::min(end, size_) / page * page;
    if (end > begin) ::madvise(const_cast<unsigned char*>(data_) + begin, end - begin, MADV_DONTNEED);
  }

 private:
  void unmap() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
    data_ = nullptr;
  }

  std::string path_;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ctdl::io
