#pragma once
// The foundations of ctdl: core (shapes, tensors, dtypes, devices, errors), expr (lazy
// expressions, eager reductions, compile-time derivatives), autograd (Var, GradRef, Tape,
// NoGrad, gradcheck) and the tape reductions ops::sum/mean/max (ops/reduce.hpp).
// Everything above them is included by its own header, as you need it: the other ops
// (<ctdl/ops/softmax.hpp>, ...), nn, models/bert, precision, optim, io, text, data,
// metrics, train and dist (e.g. <ctdl/models/bert/model.hpp>, <ctdl/train/loops.hpp>).
// <ctdl/io/npy.hpp> (NumPy .npy/.npz files) and <ctdl/interop/xtensor.hpp> (zero-copy
// views to and from xtensor) also need xtensor (link ctdl::xtensor).

#include "ctdl/fwd.hpp"

#include "ctdl/core/batch.hpp"
#include "ctdl/core/config.hpp"
#include "ctdl/core/device.hpp"
#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/core/shape.hpp"
#include "ctdl/core/tensor.hpp"

#include "ctdl/expr/expr.hpp"

#include "ctdl/autograd/gradcheck.hpp"
#include "ctdl/autograd/tape.hpp"
#include "ctdl/autograd/var.hpp"

#include "ctdl/ops/reduce.hpp"
