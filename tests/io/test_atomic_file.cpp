// io::AtomicFile: complete or absent, checked writes, stale temporaries swept.
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ctdl/io/atomic_file.hpp>
#include <ctdl/io/safetensors_writer.hpp>

#include "../test_util.hpp"

namespace fs = std::filesystem;
using namespace ctdl;

namespace {
std::string dir_for(const std::string& name) { return test::scratch_dir("atomic_file", name); }
std::size_t files_in(const std::string& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}
/// Runs `body` in a child process under a file-size limit of `bytes` (with SIGXFSZ ignored,
/// as the programs do, so writes past it fail with EFBIG); returns the child's exit code:
/// 0 when body returned, 1 when it threw a ctdl::Error whose message contains `want`.
template <class Body>
int under_file_size_limit(rlim_t bytes, const std::string& want, Body body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{bytes, bytes};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      body();
    } catch (const Error& e) {
      ::_exit(std::string(e.what()).find(want) != std::string::npos ? 1 : 3);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}
}  // namespace

TEST_CASE("AtomicFile: the file appears only at commit, complete") {
  const std::string d = dir_for("commit"), path = d + "/out.txt";
  io::write_file_atomically(path, "old\n");
  {
    io::AtomicFile f(path);
    f << "new " << std::string(100000, 'x') << '\n';  // past the buffer: written through
    f.flush();
    CHECK(test::read_file(path) == "old\n");  // not yet replaced
    CHECK(fs::exists(f.temporary()));
    f.commit();
  }
  CHECK(test::read_file(path) == "new " + std::string(100000, 'x') + "\n");
  CHECK(files_in(d) == 1);  // no temporary left
}

TEST_CASE("AtomicFile: destroyed without commit, the previous file stays and the temporary goes") {
  const std::string d = dir_for("abandon"), path = d + "/out.txt";
  io::write_file_atomically(path, "complete\n");
  try {
    io::AtomicFile f(path);
    f << "half a ";
    f.flush();
    throw std::runtime_error("stop");
  } catch (const std::runtime_error&) {
  }
  CHECK(test::read_file(path) == "complete\n");
  CHECK(files_in(d) == 1);
}

TEST_CASE("AtomicFile: a full disk is an error naming the file, and the previous file stays") {
  const std::string d = dir_for("full"), path = d + "/results.tsv";
  io::write_file_atomically(path, "previous complete results\n");
  // 64 KiB allowed: the write fails midway, in the buffered part or at commit.
  const int rc = under_file_size_limit(65536, path + ": write failed (File too large", [&] {
    io::AtomicFile f(path);
    for (int i = 0; i < 20000; ++i) f << "0.25\t0.25\t0.5\n";
    f.commit();
  });
  CHECK(rc == 1);
  CHECK(test::read_file(path) == "previous complete results\n");
  CHECK(files_in(d) == 1);

  // The safetensors writer goes the same way.
  const std::string st = d + "/model.safetensors";
  std::vector<float> weights(100000, 1.5f);
  io::SafetensorsWriter w;
  w.add("w", "F32", {100000}, weights.data(), weights.size() * sizeof(float));
  w.write(st);
  const std::string before = test::read_file(st);
  CHECK(under_file_size_limit(65536, st + ": write failed", [&] { w.write(st); }) == 1);
  CHECK(test::read_file(st) == before);
  CHECK(files_in(d) == 2);
}

TEST_CASE("AtomicFile: copies and names the missing source") {
  const std::string d = dir_for("copy");
  io::write_file_atomically(d + "/a", "abc");
  io::copy_file_atomically(d + "/a", d + "/b");
  CHECK(test::read_file(d + "/b") == "abc");
  CHECK_THROWS_WITH(io::copy_file_atomically(d + "/none", d + "/c"), Catch::Contains(d + "/none: cannot read"));
  CHECK(!fs::exists(d + "/c"));
  CHECK_THROWS_WITH(io::AtomicFile(d + "/no/such/dir/x"), Catch::Contains(d + "/no/such/dir/x: cannot create"));
}

TEST_CASE("remove_stale_temporaries: only what a process that is gone left") {
  const std::string d = dir_for("stale");
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);  // reaped: its pid names no process now
  const std::string mine = std::to_string(::getpid()), gone = std::to_string(dead);
  fs::create_directories(d + "/checkpoint-5");
  for (const std::string& f : std::vector<std::string>{"/test_results.tsv.tmp." + gone, "/checkpoint-5/model.safetensors.tmp." + gone,
                                                        "/metrics.jsonl.tmp." + mine, "/notes.tmp.txt", "/x.tmp.", "/test_results.tsv"})
    io::write_file_atomically(d + f, "x");
  auto removed = io::remove_stale_temporaries(d);
  std::sort(removed.begin(), removed.end());
  REQUIRE(removed.size() == 2);
  CHECK(removed[0] == d + "/checkpoint-5/model.safetensors.tmp." + gone);
  CHECK(removed[1] == d + "/test_results.tsv.tmp." + gone);
  CHECK(fs::exists(d + "/metrics.jsonl.tmp." + mine));  // a live process's: kept
  CHECK(fs::exists(d + "/notes.tmp.txt"));
  CHECK(fs::exists(d + "/x.tmp."));
  CHECK(fs::exists(d + "/test_results.tsv"));
}

TEST_CASE("PendingFile: beside the file and never over it, gone when destroyed, swept after a kill") {
  const std::string d = dir_for("pending");
  io::write_file_atomically(d + "/labels.txt", "old\n");  // an earlier model's
  std::string pending;
  {
    const io::PendingFile file(d + "/labels.txt", "B\nI\nO\n");
    pending = file.path();
    CHECK(pending == d + "/labels.txt.pending.tmp." + std::to_string(::getpid()));
    CHECK(test::read_file(pending) == "B\nI\nO\n");
    CHECK(test::read_file(d + "/labels.txt") == "old\n");  // untouched while pending
    CHECK(io::remove_stale_temporaries(d).empty());          // a live process's
    CHECK(files_in(d) == 2);
  }
  CHECK(!fs::exists(pending));
  CHECK(test::read_file(d + "/labels.txt") == "old\n");
  CHECK(files_in(d) == 1);

  // Copied into place with the set it belongs to: then the file is the new one.
  {
    const io::PendingFile file(d + "/labels.txt", "B\nI\nO\n");
    io::copy_file_atomically(file.path(), d + "/labels.txt");
  }
  CHECK(test::read_file(d + "/labels.txt") == "B\nI\nO\n");
  CHECK(files_in(d) == 1);

  // A process killed while its file was pending leaves it; the next run's sweep removes it.
  const pid_t child = ::fork();
  if (child == 0) {
    const io::PendingFile file(d + "/bert_config.json", "{}\n");
    ::raise(SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  const std::string left = d + "/bert_config.json.pending.tmp." + std::to_string(child);
  CHECK(fs::exists(left));
  CHECK(!fs::exists(d + "/bert_config.json"));
  const auto removed = io::remove_stale_temporaries(d);
  REQUIRE(removed.size() == 1);
  CHECK(removed[0] == left);
}

TEST_CASE("check_stream_written: a stream that could not write is an error naming it") {
  std::ofstream full("/dev/full");
  if (!full) {
    WARN("no /dev/full here: skipped");
    return;
  }
  full << std::string(100, 'x');
  CHECK_THROWS_WITH(io::check_stream_written(full, "stdout"), Catch::Contains("stdout: write failed"));
  std::ostringstream fine;
  fine << "ok";
  CHECK_NOTHROW(io::check_stream_written(fine, "buffer"));
}
