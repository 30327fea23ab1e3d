#pragma once
// The user-facing type names of ctdl, declared together (as xtensor_forward.hpp does).
// The types declared here take their default template arguments here and only here;
// other templates (GradRef, the ops, nn modules, BERT) declare their own.

#include <type_traits>

#include "ctdl/core/config.hpp"

namespace Eigen {
struct bfloat16;
struct half;
}  // namespace Eigen

namespace ctdl {

/// A runtime extent (prints as -1 in compiler messages).
inline constexpr index_t dyn = -1;

template <index_t... Dims>
struct Shape;

template <class S>
struct is_shape : std::false_type {};
template <index_t... Dims>
struct is_shape<Shape<Dims...>> : std::true_type {};

/// Any Shape<...> type.
template <class S>
concept ShapeType = is_shape<S>::value;

using bf16 = Eigen::bfloat16;
using fp16 = Eigen::half;

struct Cpu;
struct Cuda;

template <class D>
concept Device = std::is_same_v<D, Cpu> || std::is_same_v<D, Cuda>;

template <class T, ShapeType S, Device D = Cpu>
class Tensor;
template <class T, ShapeType S, Device D = Cpu>
class TensorView;

template <class T, ShapeType S, Device D = Cpu>
class Var;
class Tape;
class NoGrad;

class Error;
class ShapeError;

struct GradcheckOptions;
struct GradcheckResult;

}  // namespace ctdl
