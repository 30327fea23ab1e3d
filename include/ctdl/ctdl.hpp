#pragma once
// The public surface of ctdl. Include this, or the layer headers you need.
// Not included here, as they need xtensor (link ctdl::xtensor): <ctdl/io/npy.hpp> (NumPy
// .npy/.npz files) and <ctdl/interop/xtensor.hpp> (zero-copy views to and from xtensor).

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
