// bert_bench for the runtime-shaped family bert::Dynamic, which runs any shape (see bert_bench.hpp).
#include "bert_bench.hpp"

using ctdl::bench::Args;
CTDL_BERT_BENCH_FAMILY(Dynamic)
