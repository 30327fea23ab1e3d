#pragma once
// Var<T, Shape>: a value with a gradient, for reverse-mode differentiation on a Tape.
//
// A Var is a shared handle: copies refer to the same value and gradient, and a tape
// entry that needs a Var for its backward keeps it alive. A Var stands in expressions
// like a tensor (x * w + b), reading its current value.
//
// Contract:
//   value()          the forward value; an optimizer or gradcheck may change it in place
//   grad()           the accumulated gradient, zero-filled on first use; every use of a
//                    Var in a recorded computation adds its contribution
//   requires_grad()  false for constants and for results computed under NoGrad
//   zero_grad()      forgets the gradient (the next accumulation starts from zero)

#include <memory>
#include <string>
#include <utility>

#include "ctdl/core/tensor.hpp"
#include "ctdl/expr/expr.hpp"

namespace ctdl {

template <class T, ShapeType S>
struct VarNode {
  Tensor<T, S> value;
  Tensor<T, S> grad;  // allocated on first accumulation
  bool has_grad = false;
  bool requires_grad = false;
  bool weight_decay = true;  // optimizer metadata: false for biases and LayerNorm parameters

  /// The gradient's storage, zero-filled when first used, for kernels that accumulate
  /// into it directly (matmul with beta = 1).
  T* grad_data() {
    if (!has_grad) {
      grad = Tensor<T, S>(value.extents());
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
      grad = Tensor<T, S>(value.extents());
      has_grad = true;
    }
    using ES = typename E::shape_type;
    if constexpr (ES::rank <= S::rank) {
      std::array<index_t, S::rank> b;
      b.fill(1);
      if (expr::broadcast_into(b, e.extents()) && expr::broadcast_into(b, value.extents()) && b == value.extents()) {
        expr::evaluate<StoreOp::add>(e, grad.data(), grad.extents());
        return;
      }
    }
    if constexpr (ES::rank >= S::rank) {
      expr::sum_to(e, grad.data(), grad.extents());
    } else {
      throw ShapeError("gradient " + describe<ES>(e.extents()) + " does not fit " + describe<S>(value.extents()));
    }
  }
};

template <class T, ShapeType S>
class Var {
 public:
  using value_type = T;
  using shape_type = S;
  static constexpr std::size_t rank = S::rank;

  /// A null handle.
  Var() = default;
  /// A leaf Var (a parameter or an input) holding `value`.
  explicit Var(Tensor<T, S> value, bool requires_grad = true) : node_(std::make_shared<VarNode<T, S>>()) {
    node_->value = std::move(value);
    node_->requires_grad = requires_grad;
  }
  explicit Var(std::shared_ptr<VarNode<T, S>> node) : node_(std::move(node)) {}

  Tensor<T, S>& value() { return node().value; }
  const Tensor<T, S>& value() const { return node().value; }
  const Extents<S>& extents() const { return node().value.extents(); }
  index_t extent(std::size_t axis) const { return node().value.extent(axis); }
  bool requires_grad() const { return node().requires_grad; }
  /// Whether an optimizer applies weight decay to this parameter (BERT: not to biases
  /// and LayerNorm parameters).
  bool weight_decay() const { return node().weight_decay; }
  void set_weight_decay(bool on) { node().weight_decay = on; }
  bool has_grad() const { return node().has_grad; }

  /// The gradient; zero-filled if nothing has been accumulated yet.
  const Tensor<T, S>& grad() const {
    auto& n = node();
    if (!n.has_grad) {
      n.grad = Tensor<T, S>(n.value.extents());
      n.has_grad = true;
    }
    return n.grad;
  }
  void zero_grad() {
    node().has_grad = false;
    node().grad = Tensor<T, S>();
  }

  /// The Var as an expression leaf that keeps it alive.
  auto as_expression() const {
    auto& n = node();
    return expr::Leaf<T, S, std::shared_ptr<VarNode<T, S>>>{{}, n.value.data(), n.value.extents(), node_};
  }

  const std::shared_ptr<VarNode<T, S>>& node_ptr() const { return node_; }
  explicit operator bool() const { return static_cast<bool>(node_); }

 private:
  VarNode<T, S>& node() const {
    if (!node_) throw Error("use of a null ctdl::Var");
    return *node_;
  }

  std::shared_ptr<VarNode<T, S>> node_;
};

template <class T>
struct is_var : std::false_type {};
template <class T, class S>
struct is_var<Var<T, S>> : std::true_type {};

namespace expr {
template <class K>
inline constexpr bool is_var_keep_v = false;
template <class T, class S>
inline constexpr bool is_var_keep_v<std::shared_ptr<VarNode<T, S>>> = true;
}  // namespace expr

}  // namespace ctdl
