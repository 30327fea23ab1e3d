#pragma once
// Output files that are either complete or absent.
//
//   AtomicFile               writes `<path>.tmp.<pid>` with checked writes; commit()
//                            flushes, fsyncs, closes and renames it over `path` (then
//                            fsyncs the directory). Destroyed without commit() (an error,
//                            an exception), it removes the temporary: `path` keeps its
//                            previous complete content.
//   write_file_atomically    a whole string as one AtomicFile
//   copy_file_atomically     a file's bytes under another name, the same way
//   remove_stale_temporaries `*.tmp.<pid>` left in a directory by a process that no
//                            longer runs (a killed run); call it when a program starts
//   PendingFile              a file that belongs in `path` only with other outputs not
//                            yet made (labels.txt beside a model still training): kept
//                            meanwhile as `<path>.pending.tmp.<pid>` (copy it into place
//                            with them), removed when destroyed, swept as stale after a
//                            kill; `path` itself is never touched
//   check_stream_written     the same contract for a stream a program writes (stdout)
//
// Every failure throws ctdl::Error naming the file (the final name, and the temporary
// when that is where it happened) and the system's reason ("No space left on device",
// "File too large"). A program that wants EFBIG rather than death by SIGXFSZ under
// `ulimit -f` ignores SIGXFSZ (the programs of examples/ do).

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "ctdl/core/error.hpp"

namespace ctdl::io {

class AtomicFile {
 public:
  /// Creates `<path>.tmp.<pid>`; `path` itself is not touched until commit().
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t bytes);
  void write(std::string_view s) { write(s.data(), s.size()); }
  AtomicFile& operator<<(std::string_view s) {
    write(s);
    return *this;
  }
  AtomicFile& operator<<(char c) {
    write(&c, 1);
    return *this;
  }

  /// Hands what is buffered to the kernel (checked), so a reader of temporary() sees it;
  /// `path` is still untouched.
  void flush() {
    if (fd_ < 0) throw Error(path_ + ": written after commit()");
    flush_buffer();
  }

  /// Everything written so far goes to the disk (write + fsync) and replaces `path`.
  /// After commit() the object writes nothing more.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temporary() const { return tmp_; }

 private:
  void flush_buffer();
  [[noreturn]] void fail(const char* what, int err);

  std::string path_, tmp_;
  int fd_ = -1;
  std::string buffer_;
  static constexpr std::size_t kBufferBytes = 1 << 16;
};

void write_file_atomically(const std::string& path, std::string_view content);
void copy_file_atomically(const std::string& from, const std::string& to);

/// Removes `<name>.tmp.<pid>` files in `dir` (and in its immediate subdirectories, where
/// checkpoints go) whose process is gone. Returns the removed paths (for the log).
std::vector<std::string> remove_stale_temporaries(const std::string& dir);

/// A file that is one of a set written together later: `text` is written now (atomically)
/// under `<path>.pending.tmp.<pid>`, which path() names for copying into place with the
/// rest of the set (copy_file_atomically); `path` is not touched. The pending file is
/// removed when this is destroyed, and after a killed run by the next one's
/// remove_stale_temporaries. So a run that stops early leaves `path` as it found it: the
/// file of an earlier, complete set.
class PendingFile {
 public:
  PendingFile(const std::string& path, std::string_view text);
  ~PendingFile();
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;
  /// The pending file (the source to copy into place).
  const std::string& path() const { return pending_; }

 private:
  std::string pending_;
};

/// Flushes `out` and throws naming `name` ("stdout") when any write to it failed.
void check_stream_written(std::ostream& out, const std::string& name);
/// The same for a C stream (stdout written with printf).
void check_stream_written(std::FILE* out, const std::string& name);

// ---------------------------------------------------------------------------------------

inline AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create", errno);
  buffer_.reserve(kBufferBytes);
}

inline AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

inline void AtomicFile::write(const void* data, std::size_t bytes) {
  if (fd_ < 0) throw Error(path_ + ": written after commit()");
  if (buffer_.size() + bytes <= kBufferBytes) {
    buffer_.append(static_cast<const char*>(data), bytes);
    return;
  }
  flush_buffer();
  if (bytes < kBufferBytes) {
    buffer_.append(static_cast<const char*>(data), bytes);
    return;
  }
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {  // large blocks (tensors) go straight to the file
    const ::ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write failed", n < 0 ? errno : ENOSPC);
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

inline void AtomicFile::flush_buffer() {
  const char* p = buffer_.data();
  std::size_t left = buffer_.size();
  while (left > 0) {
    const ::ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write failed", n < 0 ? errno : ENOSPC);  // 0 bytes written: a full device
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  buffer_.clear();
}

inline void AtomicFile::commit() {
  if (fd_ < 0) throw Error(path_ + ": committed twice");
  flush_buffer();
  // fsync before rename: otherwise a crash soon after can leave the new name with no data
  // (the rename reaches the disk before the blocks do on some file systems).
  if (::fsync(fd_) != 0 && errno != EINVAL) fail("fsync failed", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(path_ + ": write failed on close of " + tmp_ + " (" + std::strerror(err) + ")");
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(path_ + ": cannot move " + tmp_ + " into place (" + std::strerror(err) + ")");
  }
  // The rename itself is durable once the directory is synced; a directory that cannot
  // be opened or synced (some network file systems) leaves the file complete anyway.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

inline void AtomicFile::fail(const char* what, int err) {
  const std::string reason = std::strerror(err);
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
    fd_ = -1;
  }
  throw Error(path_ + ": " + what + " (" + reason + ", writing " + tmp_ + ")" +
              (err == ENOSPC || err == EFBIG || err == EDQUOT ? "; the previous " + path_ + ", if any, is unchanged" : ""));
}

inline void write_file_atomically(const std::string& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

inline void copy_file_atomically(const std::string& from, const std::string& to) {
  std::FILE* in = std::fopen(from.c_str(), "rb");
  if (!in) throw Error(from + ": cannot read (" + std::strerror(errno) + ")");
  AtomicFile out(to);
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) {
    try {
      out.write(buf, n);
    } catch (...) {
      std::fclose(in);
      throw;
    }
  }
  const bool read_error = std::ferror(in) != 0;
  std::fclose(in);
  if (read_error) throw Error(from + ": read failed while copying it to " + to);
  out.commit();
}

namespace detail {
/// `name` is `<something>.tmp.<digits>`: returns the pid, or 0.
inline ::pid_t temporary_owner(const std::string& name) {
  const auto at = name.rfind(".tmp.");
  if (at == std::string::npos || at == 0 || at + 5 >= name.size()) return 0;
  ::pid_t pid = 0;
  for (std::size_t i = at + 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 100000000) return 0;
    pid = pid * 10 + (name[i] - '0');
  }
  return pid;
}
/// A process with this id exists (EPERM: it exists but is someone else's).
inline bool process_alive(::pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }
}  // namespace detail

inline std::vector<std::string> remove_stale_temporaries(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  const auto sweep = [&](const fs::path& d) {
    std::error_code e;
    for (const auto& entry : fs::directory_iterator(d, e)) {
      const std::string name = entry.path().filename().string();
      const ::pid_t pid = detail::temporary_owner(name);
      // Only regular files of a process that is gone: a live pid may be a run writing here now.
      if (pid <= 0 || pid == ::getpid() || detail::process_alive(pid) || !entry.is_regular_file(e)) continue;
      if (fs::remove(entry.path(), e)) removed.push_back(entry.path().string());
    }
  };
  if (!fs::is_directory(dir, ec)) return removed;
  sweep(dir);
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory(ec) && !entry.is_symlink(ec)) sweep(entry.path());
  return removed;
}

inline PendingFile::PendingFile(const std::string& path, std::string_view text)
    : pending_(path + ".pending.tmp." + std::to_string(::getpid())) {
  write_file_atomically(pending_, text);
}

inline PendingFile::~PendingFile() { ::unlink(pending_.c_str()); }

inline void check_stream_written(std::ostream& out, const std::string& name) {
  errno = 0;
  out.flush();
  if (!out) {
    const int err = errno;
    throw Error(name + ": write failed (" + (err ? std::string(std::strerror(err)) : "an earlier write failed") +
                "); the output is incomplete");
  }
}

inline void check_stream_written(std::FILE* out, const std::string& name) {
  errno = 0;
  if (std::fflush(out) != 0 || std::ferror(out)) {
    // errno is the reason only when this flush failed; an earlier failed write left only
    // the stream's error flag.
    const int err = errno;
    throw Error(name + ": write failed (" + (err ? std::string(std::strerror(err)) : "an earlier write failed") +
                "); the output is incomplete");
  }
}

}  // namespace ctdl::io
