#pragma once
// Var<T, Shape, Device>: a value with a gradient, for reverse-mode differentiation on a
// Tape. The device (Cpu by default, or Cuda) is where value and gradient live; an op
// given Vars on Cuda runs its CUDA kernels (compile the file with nvcc in a CUDA build,
// where the op headers and ctdl.hpp bring in the kernels), and the tape runs their
// backward there too.
//
// A Var is a shared handle: copies refer to the same value and gradient. A Var stands
// in expressions like a tensor (x * w + b), reading its current value.
//
// Value and gradient have separate lifetimes. The value lives while a Var handle, an op
// entry whose backward reads it (holding a Var) or a recorded expression does: a
// recorded expression keeps every Var operand's value until its entry runs, whether or
// not a derivative reads it. An op entry that only accumulates into or reads the
// gradient holds a GradRef, which keeps the gradient but not the value. So an
// activation that no entry holds (the input of ops::dropout, the residual of
// ops::add_layer_norm, the input of a matmul whose rounded copy is kept instead) is
// freed as soon as the forward pass drops it.
//
// Contract:
//   value()          the forward value; an optimizer or gradcheck may change it in place
//                    (the non-const access marks it changed: kernels remake their
//                    derived copies, such as a reordered weight)
//   grad()           the accumulated gradient, zero-filled on first use; every use of a
//                    Var in a recorded computation adds its contribution
//   requires_grad()  false for constants and for results computed under NoGrad
//   zero_grad()      forgets the gradient (the next accumulation starts from zero)

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "ctdl/core/tensor.hpp"
#include "ctdl/expr/expr.hpp"

namespace ctdl {

template <class T, ShapeType S, Device D = Cpu>
struct VarNode {
  VarNode() = default;
  explicit VarNode(Tensor<T, S, D> v) : value(std::move(v)) {}

  Tensor<T, S, D> value;  // released when the last Var handle and value reader go
  // Allocated on first accumulation; no storage before (nor after zero_grad), even for a
  // fully static S, whose default Tensor would be allocated and zero-filled for nothing.
  Tensor<T, S, D> grad = Tensor<T, S, D>::unallocated();
  Extents<S> extents = S::empty_extents();  // the value's, kept when the value is released
  std::uint64_t version = 0;  // bumped by every non-const Var::value(): "the value may have changed"
  /// A kernel's derived form of the value, valid for the version it records: ops::linear
  /// keeps a weight rounded and reordered for oneDNN here. Opaque to autograd.
  std::shared_ptr<void> kernel_cache;
  bool has_grad = false;
  bool requires_grad = false;
  bool weight_decay = true;  // optimizer metadata: false for biases and LayerNorm parameters

  /// The gradient's storage, zero-filled when first used, for kernels that accumulate
  /// into it directly (matmul with beta = 1).
  T* grad_data() {
    if (!has_grad) {
      grad = Tensor<T, S, D>(extents);
      has_grad = true;
    }
    return grad.data();
  }

  /// grad += e. The expression may broadcast to the value's extents, or be an
  /// expression over extents the value broadcasts to (then it is summed back over the
  /// broadcast axes).
  template <class E>
  void accumulate(const E& e) {
    if (!has_grad) {
      grad = Tensor<T, S, D>(extents);
      has_grad = true;
    }
    using ES = typename E::shape_type;
    if constexpr (ES::rank <= S::rank) {
      std::array<index_t, S::rank> b;
      b.fill(1);
      if (expr::broadcast_into(b, e.extents()) && expr::broadcast_into(b, extents) && b == extents) {
        if constexpr (std::is_same_v<D, Cpu>) {
          expr::evaluate<StoreOp::add>(e, grad.data(), grad.extents());
        } else {
          static_assert(DeviceEvaluator<D>::available,
                        "accumulating a gradient on this device needs its evaluator (CUDA: include "
                        "<ctdl/kernels/cuda/elementwise.cuh> and compile with nvcc)");
          DeviceEvaluator<D>::template evaluate<StoreOp::add>(e, grad.data(), grad.extents());
        }
        return;
      }
    }
    if constexpr (ES::rank >= S::rank) {
      if constexpr (std::is_same_v<D, Cpu>) {
        expr::sum_to(e, grad.data(), grad.extents());
      } else {
        static_assert(DeviceEvaluator<D>::available,
                      "summing a gradient back on this device needs its evaluator (CUDA: include "
                      "<ctdl/kernels/cuda/elementwise.cuh> and compile with nvcc)");
        DeviceEvaluator<D>::sum_to(e, grad.data(), grad.extents());
      }
    } else {
      throw ShapeError("gradient " + describe<ES>(e.extents()) + " does not fit " + describe<S>(extents));
    }
  }
};

namespace autograd_detail {

/// Shared by the Var handles of one node and by the value readers among tape entries;
/// the last one to go releases the node's value (the node and its gradient may live on
/// in GradRefs).
template <class T, ShapeType S, Device D = Cpu>
struct ValueOwner {
  std::shared_ptr<VarNode<T, S, D>> node;
  explicit ValueOwner(std::shared_ptr<VarNode<T, S, D>> n) : node(std::move(n)) {}
  ValueOwner(const ValueOwner&) = delete;
  ValueOwner& operator=(const ValueOwner&) = delete;
  ~ValueOwner() { node->value = Tensor<T, S, D>::unallocated(); }
};

/// What an expression leaf holds of a Var: its value (the leaf reads it) and its node.
template <class T, ShapeType S, Device D = Cpu>
struct VarKeep {
  std::shared_ptr<ValueOwner<T, S, D>> owner;
  VarNode<T, S, D>* operator->() const { return owner->node.get(); }
};

}  // namespace autograd_detail

template <class T, ShapeType S, Device D>
class Var {
 public:
  using value_type = T;
  using shape_type = S;
  using device_type = D;
  static constexpr std::size_t rank = S::rank;

  /// A null handle.
  Var() = default;
  /// A leaf Var (a parameter or an input) holding `value`.
  explicit Var(Tensor<T, S, D> value, bool requires_grad = true) {
    auto node = std::make_shared<VarNode<T, S, D>>(std::move(value));
    node->extents = node->value.extents();
    node->requires_grad = requires_grad;
    owner_ = std::make_shared<autograd_detail::ValueOwner<T, S, D>>(std::move(node));
  }

  /// The value, for changing it: marks it changed, so kernels remake what they derived
  /// from it (a reordered weight). The mark is made at this call: change the value
  /// through the returned reference before the next forward pass, and call value()
  /// again for changes after that.
  Tensor<T, S, D>& value() {
    auto& n = node();
    ++n.version;
    return n.value;
  }
  const Tensor<T, S, D>& value() const { return node().value; }
  const Extents<S>& extents() const { return node().value.extents(); }
  index_t extent(std::size_t axis) const { return node().value.extent(axis); }
  bool requires_grad() const { return node().requires_grad; }
  /// Whether an optimizer applies weight decay to this parameter (BERT: not to biases
  /// and LayerNorm parameters).
  bool weight_decay() const { return node().weight_decay; }
  void set_weight_decay(bool on) { node().weight_decay = on; }
  bool has_grad() const { return node().has_grad; }

  /// The gradient; zero-filled if nothing has been accumulated yet.
  const Tensor<T, S, D>& grad() const {
    auto& n = node();
    if (!n.has_grad) {
      n.grad = Tensor<T, S, D>(n.extents);
      n.has_grad = true;
    }
    return n.grad;
  }
  void zero_grad() {
    node().has_grad = false;
    node().grad = Tensor<T, S, D>::unallocated();
  }

  /// The Var as an expression leaf that keeps its value and node alive.
  auto as_expression() const {
    auto& n = node();
    return expr::Leaf<T, S, autograd_detail::VarKeep<T, S, D>>{{}, n.value.data(), n.value.extents(), {owner_}};
  }

  const std::shared_ptr<VarNode<T, S, D>>& node_ptr() const {
    static const std::shared_ptr<VarNode<T, S, D>> null;
    return owner_ ? owner_->node : null;
  }
  /// How many handles keep the value alive: Var copies and tape entries that read it.
  long value_use_count() const { return owner_.use_count(); }
  explicit operator bool() const { return static_cast<bool>(owner_); }

 private:
  VarNode<T, S, D>& node() const {
    if (!owner_) throw Error("use of a null ctdl::Var");
    return *owner_->node;
  }

  std::shared_ptr<autograd_detail::ValueOwner<T, S, D>> owner_;
};

/// A tape entry's hold on a Var whose gradient its backward accumulates into or reads
/// but whose value it does not read (see the header comment). Made from a Var.
template <class T, ShapeType S, Device D = Cpu>
class GradRef {
 public:
  GradRef() = default;
  GradRef(const Var<T, S, D>& v) : node_(v.node_ptr()) {}  // NOLINT(google-explicit-constructor): entries take Vars

  const Extents<S>& extents() const { return node_->extents; }
  index_t extent(std::size_t axis) const { return node_->extents[axis]; }
  index_t size() const { return numel(node_->extents); }
  bool requires_grad() const { return node_->requires_grad; }
  bool has_grad() const { return node_->has_grad; }
  /// The gradient; zero-filled if nothing has been accumulated yet.
  const Tensor<T, S, D>& grad() const {
    node_->grad_data();
    return node_->grad;
  }
  const std::shared_ptr<VarNode<T, S, D>>& node_ptr() const { return node_; }

 private:
  std::shared_ptr<VarNode<T, S, D>> node_;
};

template <class T>
struct is_var : std::false_type {};
template <class T, class S, class D>
struct is_var<Var<T, S, D>> : std::true_type {};

namespace expr {
template <class T, class S, class D>
inline constexpr bool is_var_keep_v<autograd_detail::VarKeep<T, S, D>> = true;
}  // namespace expr

}  // namespace ctdl
