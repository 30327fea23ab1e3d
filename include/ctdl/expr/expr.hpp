#pragma once
// Lazy elementwise expressions: node types, functors with their derivatives, the
// user-facing functions, fused evaluation, reductions and compile-time gradients.
#include "ctdl/expr/eval.hpp"
#include "ctdl/expr/expression.hpp"
#include "ctdl/expr/functions.hpp"
#include "ctdl/expr/functors.hpp"
#include "ctdl/expr/grad.hpp"
#include "ctdl/expr/reduce.hpp"
