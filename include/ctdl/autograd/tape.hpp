#pragma once
// The tape: what a forward pass did, so that backward() can run it in reverse.
//
//   Tape tape;
//   Var y = tape.record(gelu(x * w + b));   // one entry: the whole elementwise tree
//   Var l = ops::sum(tape, y);              // one entry: a coarse op
//   tape.backward(l);                       // x.grad(), w.grad(), b.grad() now hold dl/d.
//
// An elementwise expression enters as one entry whose backward, for each operand that
// needs a gradient, evaluates upstream * derivative<K>(expression) in one fused loop
// (summed back over the axes the operand was broadcast along). Coarse ops (matmul,
// softmax, ...) push one entry each with a hand-written backward.
//
// A recorded expression's entry keeps every Var operand (shared, its value alive until
// the entry runs, whether or not a derivative reads it: write value-free paths such as
// residual adds as ops with GradRef members) and a copy of every plain tensor or view
// operand, taken at record(), so the caller may free or change those before backward
// (their values at record() are what backward uses). Var operands are read when
// backward runs: do not change or replace a Var's value between record() and backward
// (nothing checks this).
//
// Under `NoGrad guard(tape)` nothing is recorded and no activation is kept.
// The tape is a plain object owned by the caller (no global state); backward() runs
// the entries newest first, destroying each after its backward, so activations and
// intermediate gradients are released as backward proceeds.

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ctdl/autograd/var.hpp"
#include "ctdl/expr/expr.hpp"

namespace ctdl {

/// One recorded operation. backward() reads its output's gradient and adds to its
/// inputs' gradients.
struct TapeEntry {
  virtual ~TapeEntry() = default;
  virtual void backward() = 0;
  virtual const char* name() const = 0;
};

class Tape {
 public:
  Tape() = default;
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// False inside a NoGrad scope.
  bool recording() const { return paused_ == 0; }
  std::size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

  /// Appends an entry (used by ops; only while recording()).
  void push(std::unique_ptr<TapeEntry> entry) { entries_.push_back(std::move(entry)); }

  /// Evaluates an elementwise expression into a new Var and, if any Var operand needs
  /// a gradient and the tape is recording, records it.
  template <class E>
    requires Expression<E>
  auto record(const E& e);

  /// Backpropagates from a one-element `loss` (seed gradient 1), then clears the tape.
  /// A loss or seed that does not fit (ShapeError), or a loss that requires no gradient
  /// (Error), throws before anything runs: the tape is unchanged (clear() drops it). An
  /// exception from an entry's backward clears the tape and propagates: the tape is
  /// empty and usable, gradients accumulated before it stay (zero_grad() before
  /// retrying).
  template <class T, class S, class D>
  void backward(const Var<T, S, D>& loss);
  /// Backpropagates with `seed` as the gradient of `y`, then clears the tape.
  template <class T, class S, class D>
  void backward(const Var<T, S, D>& y, const Tensor<T, S, D>& seed);

  /// Calls fn after each entry's backward, once the entry is destroyed (so whatever it
  /// referenced, a parameter included, is released): data-parallel training starts
  /// a bucket's all-reduce as soon as no entry left can add to its gradients.
  void after_each_entry(std::function<void()> fn) { after_entry_ = std::move(fn); }

 private:
  friend class NoGrad;
  std::vector<std::unique_ptr<TapeEntry>> entries_;
  std::function<void()> after_entry_;
  int paused_ = 0;
};

/// Within its lifetime, `tape` records nothing.
class NoGrad {
 public:
  explicit NoGrad(Tape& tape) : tape_(tape) { ++tape_.paused_; }
  ~NoGrad() { --tape_.paused_; }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  Tape& tape_;
};

/// Whether any Var operand of e requires a gradient.
template <class E>
bool any_requires_grad(const E& e) {
  bool any = false;
  expr::for_each_leaf(e, [&](const auto& leaf, auto) {
    if constexpr (expr::is_var_keep_v<std::remove_cvref_t<decltype(leaf.keep)>>) any = any || leaf.keep->requires_grad;
  });
  return any;
}

/// A new result Var, requiring a gradient when `needs_grad` (callers pass
/// tape.recording() && some input requires a gradient).
template <class T, class S, class D>
Var<T, S, D> make_result(Tensor<T, S, D> value, bool needs_grad) {
  return Var<T, S, D>(std::move(value), needs_grad);
}

// ============================================================================

namespace autograd_detail {

/// What an expression's leaves are: Vars on the host, Vars on a CUDA device, or plain
/// tensors and views (whose memory the leaf does not say).
template <class X>
struct LeafCensus {  // Scalar, Constant: no leaf
  static constexpr int cpu_vars = 0, cuda_vars = 0, plain = 0;
};
template <class T, class S, class K>
struct LeafCensus<expr::Leaf<T, S, K>> {
  static constexpr int cpu_vars = 0, cuda_vars = 0, plain = 1;
};
template <class T, class S, class TV, class SV, class D>
struct LeafCensus<expr::Leaf<T, S, VarKeep<TV, SV, D>>> {
  static constexpr int cpu_vars = std::is_same_v<D, Cpu>, cuda_vars = !std::is_same_v<D, Cpu>, plain = 0;
};
template <class F, class... Args>
struct LeafCensus<expr::Map<F, Args...>> {
  static constexpr int cpu_vars = (0 + ... + LeafCensus<Args>::cpu_vars);
  static constexpr int cuda_vars = (0 + ... + LeafCensus<Args>::cuda_vars);
  static constexpr int plain = (0 + ... + LeafCensus<Args>::plain);
};

/// The device a recorded expression runs on: Cuda when its Vars are on Cuda. There every
/// tensor operand must be a Var (a plain leaf does not say where its memory is, and the
/// entry would copy it on the host), and Vars of both devices never mix.
template <class E>
constexpr auto recorded_device() {
  using C = LeafCensus<E>;
  static_assert(C::cuda_vars == 0 || C::cpu_vars == 0,
                "tape.record: the expression mixes Vars on the host and on a CUDA device");
  static_assert(C::cuda_vars == 0 || C::plain == 0,
                "tape.record on Cuda: every tensor operand must be a Var on the device (wrap a device tensor "
                "as Var(tensor, false)); scalars may stand as they are");
  if constexpr (C::cuda_vars > 0) return Cuda{};
  else return Cpu{};
}

template <class E, class T, class S, class D>
struct ExpressionEntry final : TapeEntry {
  E e;
  std::shared_ptr<VarNode<T, S, D>> out;

  ExpressionEntry(E e_, std::shared_ptr<VarNode<T, S, D>> out_) : e(std::move(e_)), out(std::move(out_)) {}
  const char* name() const override { return "expression"; }

  void backward() override {
    if (!out->has_grad) return;
    const expr::Leaf<T, S> upstream{{}, out->grad.data(), out->grad.extents(), {}};
    expr::for_each_leaf(e, [&](const auto& leaf, auto k) {
      using K = std::remove_cvref_t<decltype(leaf.keep)>;
      if constexpr (expr::is_var_keep_v<K>) {
        if (!leaf.keep->requires_grad) return;
        using LT = typename std::remove_cvref_t<decltype(leaf)>::value_type;
        auto g = expr::chain_product<T>(upstream, expr::derivative<decltype(k)::value>(e));
        if constexpr (std::is_same_v<LT, T>) leaf.keep->accumulate(g);
        else leaf.keep->accumulate(expr::make_map(expr::Retype<LT>{}, g));
      }
    });
  }
};

}  // namespace autograd_detail

template <class E>
  requires Expression<E>
auto Tape::record(const E& e) {
  using T = typename E::value_type;
  using S = typename E::shape_type;
  using D = decltype(autograd_detail::recorded_device<E>());
  const bool needs_grad = recording() && any_requires_grad(e);
  Var<T, S, D> result = make_result(Tensor<T, S, D>(e), needs_grad);
  if (needs_grad) {
    // The entry's backward reads every operand (d(x*m)/dx is m): it keeps its own copy of
    // the plain tensors and views, which the caller may free or change before backward.
    auto owned = expr::owning(e);
    push(std::make_unique<autograd_detail::ExpressionEntry<decltype(owned), T, S, D>>(std::move(owned),
                                                                                       result.node_ptr()));
  }
  return result;
}

template <class T, class S, class D>
void Tape::backward(const Var<T, S, D>& loss) {
  if (loss.value().size() != 1) {
    throw ShapeError("backward: the loss must hold one element, not " + describe<S>(loss.extents()) +
                     "; pass a seed gradient for other shapes");
  }
  backward(loss, Tensor<T, S, D>::full(loss.extents(), T(1)));
}

template <class T, class S, class D>
void Tape::backward(const Var<T, S, D>& y, const Tensor<T, S, D>& seed) {
  if (seed.extents() != y.extents()) {
    throw ShapeError("backward: seed " + describe<S>(seed.extents()) + " does not match " + describe<S>(y.extents()));
  }
  if (!y.requires_grad()) throw Error("backward: the value does not depend on anything that requires a gradient");
  // Each entry leaves the tape before its backward runs and is destroyed right after:
  // what it kept for backward (inputs, outputs, and through them their gradients) is
  // released while the rest of backward runs, so peak memory is the forward's, not
  // forward + all gradients. The tape never holds a finished (or null) entry.
  try {
    y.node_ptr()->accumulate(expr::as_expr(seed));
    while (!entries_.empty()) {
      {
        const std::unique_ptr<TapeEntry> entry = std::move(entries_.back());
        entries_.pop_back();
        entry->backward();
      }
      if (after_entry_) after_entry_();
    }
  } catch (...) {
    // Basic guarantee: the rest of this backward cannot be run meaningfully, so the tape
    // is cleared (its activations released) and stays usable; gradients accumulated
    // before the failure stay until zero_grad().
    entries_.clear();
    throw;
  }
}

}  // namespace ctdl
