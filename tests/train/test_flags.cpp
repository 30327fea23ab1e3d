// The flag parser of the programs: the forms the original TensorFlow scripts accepted.
#include <catch2/catch.hpp>

#include <ctdl/train/flags.hpp>

#include <vector>

using ctdl::train::FlagError;
using ctdl::train::Flags;

namespace {
struct Parsed {
  bool do_train = false, cased = true, use_fp16 = false, distributed = false;
  std::string dir;
  std::int64_t batch = 32;
  double lr = 5e-5;
};
Parsed parse(std::vector<std::string> args) {
  Parsed p;
  Flags f("prog");
  f.add("do_train", &p.do_train, "").add("cased", &p.cased, "").add("use_fp16", &p.use_fp16, "");
  f.add("distributed", &p.distributed, "").add("data_dir", &p.dir, "").add("train_batch_size", &p.batch, "");
  f.add("learning_rate", &p.lr, "").alias("horovod", "distributed");
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  f.parse(static_cast<int>(argv.size()), argv.data());
  return p;
}
}  // namespace

TEST_CASE("flag=value, flag value and bare boolean flags") {
  const auto p = parse({"--do_train", "--data_dir=d1", "--train_batch_size", "16", "--learning_rate=2e-5",
                        "--cased=false", "--use_fp16", "true", "--horovod"});
  CHECK(p.do_train);
  CHECK(p.dir == "d1");
  CHECK(p.batch == 16);
  CHECK(p.lr == 2e-5);
  CHECK_FALSE(p.cased);
  CHECK(p.use_fp16);
  CHECK(p.distributed);  // through the alias
  CHECK_FALSE(parse({"--nocased"}).cased);
  CHECK(parse({"--cased", "--do_train"}).cased);  // a bare boolean before another flag
  CHECK_FALSE(parse({"--cased=0"}).cased);
  CHECK(parse({"--cased=YES"}).cased);
  CHECK(parse({"--data_dir=a", "--data_dir", "b"}).dir == "b");  // the last one wins
}

TEST_CASE("flag errors name the flag, and unknown flags get a suggestion") {
  CHECK_THROWS_WITH(parse({"--do_trian"}), "unknown flag --do_trian; did you mean --do_train?");
  CHECK_THROWS_WITH(parse({"--frobnicate"}), "unknown flag --frobnicate (--help lists the flags)");
  CHECK_THROWS_WITH(parse({"--train_batch_size=3x"}), "flag --train_batch_size: '3x' is not a whole number");
  CHECK_THROWS_WITH(parse({"--learning_rate"}), "flag --learning_rate needs a value");
  CHECK_THROWS_WITH(parse({"--cased=maybe"}), "flag --cased takes true or false, not 'maybe'");
  CHECK_THROWS_WITH(parse({"stray"}), Catch::Contains("unexpected argument 'stray'"));
}
