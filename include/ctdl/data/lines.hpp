#pragma once
// LineReader: the lines of a text file, numbered, from a memory mapping. A line ends at
// LF, CRLF or a lone CR (old Mac files), as Python's universal newlines read them: a
// CR-only file read as one line would silently become one row. The original pipeline read
// labels.txt and vocab.txt that way (open()); its TSV and CoNLL readers
// (tf.io.gfile.GFile) end a line at LF only and delete every CR, so there a lone CR glued
// the text on its two sides together, where this reader splits it. Files whose only CRs
// are those of CRLF endings read the same in both.
//
// Pages already read are dropped from the process's resident set every 64 MiB, so
// reading a file of any size keeps memory flat. The string_views it returns point into
// the mapping and stay valid while the reader lives.

#include <cstddef>
#include <string>
#include <string_view>

#include "ctdl/core/error.hpp"
#include "ctdl/io/mapped_file.hpp"

namespace ctdl::data {

/// An input problem at a known place: "file:line: problem".
class DataError : public Error {
 public:
  DataError(const std::string& file, std::size_t line, const std::string& problem)
      : Error(file + ":" + std::to_string(line) + ": " + problem), file(file), line(line), problem(problem) {}
  std::string file;
  std::size_t line;
  std::string problem;
};

class LineReader {
 public:
  explicit LineReader(std::string path) : file_(std::move(path)) { file_.advise_sequential(); }

  const std::string& path() const { return file_.path(); }
  std::size_t size_bytes() const { return file_.size(); }
  /// The 1-based number of the line `next` returned last.
  std::size_t line_number() const { return line_; }
  /// Bytes consumed so far (for progress).
  std::size_t position() const { return pos_; }

  /// The next line without its "\n", "\r\n" or "\r"; false at the end of the file. A
  /// final line without a line ending counts; an empty file has no lines.
  bool next(std::string_view& line) {
    const std::string_view all = file_.view();
    if (pos_ >= all.size()) return false;
    const std::size_t lf = all.find('\n', pos_);
    const std::size_t stop = lf == std::string_view::npos ? all.size() : lf;
    line = all.substr(pos_, stop - pos_);
    // A second memchr, for CR within the line (in cache by now): reading lines alone measured
    // about 10% slower on a 300 MB LF file, nothing next to tokenizing them.
    const std::size_t cr = line.find('\r');
    if (cr == std::string_view::npos) {
      pos_ = stop + 1;
    } else if (cr + 1 == line.size() && stop != all.size()) {  // CRLF
      line.remove_suffix(1);
      pos_ = stop + 1;
    } else {  // a lone CR ends the line; the rest is the next line
      line = line.substr(0, cr);
      pos_ += cr + 1;
    }
    ++line_;
    if (pos_ - released_ >= kReleaseBytes) {  // keep the resident set flat
      file_.release(released_, pos_ > kKeepBytes ? pos_ - kKeepBytes : 0);
      released_ = pos_ > kKeepBytes ? pos_ - kKeepBytes : 0;
    }
    return true;
  }

 private:
  static constexpr std::size_t kReleaseBytes = std::size_t{64} << 20;
  static constexpr std::size_t kKeepBytes = std::size_t{8} << 20;  // recent lines stay valid
  io::MappedFile file_;
  std::size_t pos_ = 0, line_ = 0, released_ = 0;
};

}  // namespace ctdl::data
