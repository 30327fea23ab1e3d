// bert_bench for the Mini family (see bert_bench.hpp).
#include "bert_bench.hpp"

using ctdl::bench::Args;
CTDL_BERT_BENCH_FAMILY(Mini)
