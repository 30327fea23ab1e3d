#pragma once
// Tensor<T, Shape, Device>: an owning, contiguous, row-major, 64-byte aligned array whose
// static extents are part of its type. TensorView<T, Shape, Device>: the same without
// ownership (T may be const). Both accept lazy expressions (ctdl/expr) on assignment,
// which are evaluated in one fused loop. Between two views, `=` copies the view handle,
// not the elements (dst = src makes dst view src's elements; view().slice(...) = other
// assigns to a temporary and changes nothing): to copy elements, assign an expression,
// dst = lazy(src).
//
// On Cuda, construction (zero-filled, from values, copies), full() and fill() use the
// CUDA runtime (cudaMemset/cudaMemcpy); assigning an expression runs the CUDA evaluator
// (kernels/cuda/elementwise.cuh, compiled by nvcc; a compile error elsewhere); element
// access (operator(), item()) is a compile error: copy to the host first.
//
//   Tensor<float, Shape<dyn, 768>> h({8, 768});      // zero-filled, 8 x 768
//   h = gelu(h * 2.0f + bias);                       // one fused loop
//   auto row = h[3];                                 // TensorView<float, Shape<768>>
//   auto top = h.view().slice(0, 4);                 // TensorView<float, Shape<dyn, 768>>

#include <algorithm>
#include <array>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "ctdl/core/config.hpp"
#include "ctdl/core/device.hpp"
#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/core/shape.hpp"

namespace ctdl {

/// How an evaluated expression is stored into its destination.
enum class StoreOp { assign, add, sub, mul };

/// A lazy elementwise expression (see ctdl/expr). Declared here so that tensors can be
/// assigned from expressions without core/ depending on expr/.
template <class E>
concept Expression = requires { typename std::remove_cvref_t<E>::ctdl_expression_tag; };


template <class T>
struct is_tensor : std::false_type {};
template <class T, class S, class D>
struct is_tensor<Tensor<T, S, D>> : std::true_type {};
template <class T>
struct is_tensor_view : std::false_type {};
template <class T, class S, class D>
struct is_tensor_view<TensorView<T, S, D>> : std::true_type {};

/// How expressions are evaluated into memory of device D. Cpu memory uses the host
/// evaluator (expr/eval.hpp); <ctdl/kernels/cuda/elementwise.cuh>, compiled by nvcc,
/// specialises this for Cuda. Without that specialisation, assigning an expression to a
/// device tensor is a compile error (it would run host code on device memory).
template <class D>
struct DeviceEvaluator {
  static constexpr bool available = false;
};

namespace detail {
template <StoreOp Op, class D, class E, class T, std::size_t R>
void evaluate_on(const E& e, T* out, const std::array<index_t, R>& extents);
template <class T, class S, class E>
void check_assignable_expression();
template <class T, class S, class E>
void check_constructible_from_expression();
template <std::size_t R>
std::array<index_t, R> row_major_strides(const std::array<index_t, R>& extents);
}  // namespace detail

template <class T, ShapeType S, Device D>
class TensorView {
 public:
  using value_type = std::remove_const_t<T>;
  using element_type = T;
  using shape_type = S;
  using device_type = D;
  static constexpr std::size_t rank = S::rank;
  using extents_type = std::array<index_t, rank>;

  TensorView() : data_(nullptr), extents_(S::empty_extents()) {}
  /// Views `data` with `extents`; throws ShapeError if they do not fit S.
  TensorView(T* data, const extents_type& extents) : data_(data), extents_(extents) {
    S::check(extents, "TensorView");
  }
  /// A view of const elements from a view of mutable ones.
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<const U, T>)
  TensorView(const TensorView<U, S, D>& other) : data_(other.data()), extents_(other.extents()) {}

  T* data() const { return data_; }
  const extents_type& extents() const { return extents_; }
  index_t extent(std::size_t axis) const { return extents_[axis]; }
  index_t size() const { return numel(extents_); }
  bool empty() const { return size() == 0; }

  /// Row `i` along the leading axis.
  auto operator[](index_t i) const
    requires(rank >= 1)
  {
    check_index(i, extents_[0], "TensorView::operator[]");
    std::array<index_t, rank - 1> sub;
    std::copy(extents_.begin() + 1, extents_.end(), sub.begin());
    return TensorView<T, drop_first_t<S>, D>(data_ + i * numel(sub), sub);
  }

  /// Rows [begin, end) along the leading axis.
  auto slice(index_t begin, index_t end) const
    requires(rank >= 1)
  {
    if (begin < 0 || end < begin || end > extents_[0]) {
      throw ShapeError("TensorView::slice: rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                       ") out of range for " + describe<S>(extents_));
    }
    extents_type sub = extents_;
    sub[0] = end - begin;
    const index_t row = extents_[0] ? size() / extents_[0] : 0;
    return TensorView<T, leading_dyn_t<S>, D>(data_ + begin * row, sub);
  }

  /// The same elements seen with another shape; the element counts must agree.
  template <ShapeType S2>
  TensorView<T, S2, D> reshape(const std::array<index_t, S2::rank>& extents) const {
    static_assert(S::static_size == dyn || S2::static_size == dyn || S::static_size == S2::static_size,
                  "reshape: static element counts differ");
    if (numel(extents) != size() || !S2::accepts(extents)) {
      throw ShapeError("reshape: " + describe<S>(extents_) + " cannot be viewed as " + describe<S2>(extents));
    }
    return {data_, extents};
  }

  /// Element at a full multi-index (checked).
  template <class... I>
    requires(sizeof...(I) == rank && (std::is_integral_v<I> && ...))
  T& operator()(I... idx) const {
    static_assert(std::is_same_v<D, Cpu>, "element access reads host memory: copy a device tensor to the host first");
    const std::array<index_t, rank> ix{static_cast<index_t>(idx)...};
    index_t off = 0;
    for (std::size_t a = 0; a < rank; ++a) {
      check_index(ix[a], extents_[a], "TensorView::operator()");
      off = off * extents_[a] + ix[a];
    }
    return data_[off];
  }

  /// The single element of a one-element view.
  T& item() const {
    static_assert(std::is_same_v<D, Cpu>, "item() reads host memory: copy a device tensor to the host first");
    if (size() != 1) throw ShapeError("item(): " + describe<S>(extents_) + " does not hold exactly one element");
    return data_[0];
  }

  /// Evaluates an expression into this view's elements (NumPy-style broadcast of the
  /// expression to this view's extents).
  template <Expression E>
    requires(!std::is_const_v<T>)
  const TensorView& operator=(const E& e) const {
    detail::check_assignable_expression<value_type, S, E>();
    detail::evaluate_on<StoreOp::assign, D>(e, data_, extents_);
    return *this;
  }
  template <Expression E>
    requires(!std::is_const_v<T>)
  const TensorView& operator+=(const E& e) const {
    detail::check_assignable_expression<value_type, S, E>();
    detail::evaluate_on<StoreOp::add, D>(e, data_, extents_);
    return *this;
  }
  template <Expression E>
    requires(!std::is_const_v<T>)
  const TensorView& operator-=(const E& e) const {
    detail::check_assignable_expression<value_type, S, E>();
    detail::evaluate_on<StoreOp::sub, D>(e, data_, extents_);
    return *this;
  }
  template <Expression E>
    requires(!std::is_const_v<T>)
  const TensorView& operator*=(const E& e) const {
    detail::check_assignable_expression<value_type, S, E>();
    detail::evaluate_on<StoreOp::mul, D>(e, data_, extents_);
    return *this;
  }

  /// Fills every element with `v`.
  void fill(const value_type& v) const
    requires(!std::is_const_v<T>)
  {
    DeviceAllocator<D>::fill(data_, static_cast<std::size_t>(size()), v);
  }

 private:
  static void check_index(index_t i, index_t n, const char* op) {
    if (i < 0 || i >= n) {
      throw ShapeError(std::string(op) + ": index " + std::to_string(i) + " out of range [0, " + std::to_string(n) + ")");
    }
  }

  T* data_;
  extents_type extents_;
};

template <class T, ShapeType S, Device D>
class Tensor {
 public:
  using value_type = T;
  using shape_type = S;
  using device_type = D;
  static constexpr std::size_t rank = S::rank;
  using extents_type = std::array<index_t, rank>;
  static_assert(!std::is_const_v<T> && !std::is_reference_v<T>, "Tensor elements are plain value types");

  /// An empty tensor (runtime extents 0), or a zero-filled one when S is fully static.
  Tensor() : Tensor(S::empty_extents()) {}
  /// A zero-filled tensor; throws ShapeError if `extents` do not fit S.
  explicit Tensor(const extents_type& extents) : Tensor(extents, Uninitialized{}) {
    if constexpr (std::is_same_v<D, Cpu>) std::fill(data(), data() + size(), T{});
    else DeviceAllocator<D>::fill(data(), static_cast<std::size_t>(size()), T{});
  }
  /// A tensor with the given elements in row-major order.
  Tensor(const extents_type& extents, std::initializer_list<T> values) : Tensor(extents, Uninitialized{}) {
    if (static_cast<index_t>(values.size()) != size()) {
      throw ShapeError("Tensor: " + std::to_string(values.size()) + " values given for " + describe<S>(extents));
    }
    if constexpr (std::is_same_v<D, Cpu>) std::copy(values.begin(), values.end(), data());
    else DeviceAllocator<D>::copy_from_host(data(), values.begin(), sizeof(T) * values.size());
  }
  /// Evaluates an expression into a new tensor of the expression's extents.
  template <Expression E>
  Tensor(const E& e) : Tensor(e.extents(), Uninitialized{}) {  // NOLINT: implicit by design
    detail::check_constructible_from_expression<T, S, E>();
    detail::evaluate_on<StoreOp::assign, D>(e, data(), extents_);
  }

  /// A tensor whose elements are not initialised (for outputs about to be written).
  static Tensor uninitialized(const extents_type& extents) { return Tensor(extents, Uninitialized{}); }
  /// No storage and every extent 0, even when S is fully static: a place for a tensor
  /// made later (a Var's gradient before the first accumulation), which costs no
  /// allocation. It fits S only once assigned. size() is 0, but for rank 0 (Shape<>),
  /// whose one element is absent: data() is null. A copy of it is unallocated too.
  static Tensor unallocated() { return Tensor(extents_type{}, Unallocated{}); }
  static Tensor full(const extents_type& extents, const T& v) {
    Tensor t(extents, Uninitialized{});
    DeviceAllocator<D>::fill(t.data(), static_cast<std::size_t>(t.size()), v);
    return t;
  }

  Tensor(const Tensor& other) : extents_(other.extents_) {
    if (!other.storage_) return;  // empty, or unallocated (a rank-0 one has size() 1 and no element)
    storage_.reset(DeviceAllocator<D>::allocate(sizeof(T) * static_cast<std::size_t>(size())));
    DeviceAllocator<D>::copy(data(), other.data(), sizeof(T) * static_cast<std::size_t>(size()));
  }
  Tensor(Tensor&& other) noexcept
      : storage_(std::move(other.storage_)), extents_(std::exchange(other.extents_, S::empty_extents())) {}
  Tensor& operator=(const Tensor& other) {
    if (this != &other) *this = Tensor(other);
    return *this;
  }
  Tensor& operator=(Tensor&& other) noexcept {
    storage_ = std::move(other.storage_);
    extents_ = std::exchange(other.extents_, S::empty_extents());
    return *this;
  }

  /// Evaluates `e` into this tensor's existing storage. The expression must broadcast to
  /// this tensor's extents; reading this same tensor elementwise (t = t * 2) is safe.
  template <Expression E>
  Tensor& operator=(const E& e) {
    view() = e;
    return *this;
  }
  template <Expression E>
  Tensor& operator+=(const E& e) {
    view() += e;
    return *this;
  }
  template <Expression E>
  Tensor& operator-=(const E& e) {
    view() -= e;
    return *this;
  }
  template <Expression E>
  Tensor& operator*=(const E& e) {
    view() *= e;
    return *this;
  }

  T* data() { return static_cast<T*>(storage_.get()); }
  const T* data() const { return static_cast<const T*>(storage_.get()); }
  const extents_type& extents() const { return extents_; }
  index_t extent(std::size_t axis) const { return extents_[axis]; }
  index_t size() const { return numel(extents_); }
  bool empty() const { return size() == 0; }

  TensorView<T, S, D> view() { return {data(), extents_}; }
  TensorView<const T, S, D> view() const { return {data(), extents_}; }
  operator TensorView<T, S, D>() { return view(); }
  operator TensorView<const T, S, D>() const { return view(); }

  auto operator[](index_t i) requires(rank >= 1) { return view()[i]; }
  auto operator[](index_t i) const requires(rank >= 1) { return view()[i]; }
  template <class... I>
  T& operator()(I... idx) { return view()(idx...); }
  template <class... I>
  const T& operator()(I... idx) const { return view()(idx...); }
  T& item() { return view().item(); }
  const T& item() const { return view().item(); }
  void fill(const T& v) { view().fill(v); }

 private:
  struct Uninitialized {};
  struct Unallocated {};
  struct Free {
    void operator()(void* p) const noexcept { DeviceAllocator<D>::deallocate(p); }
  };

  Tensor(const extents_type& extents, Uninitialized) : extents_(extents) {
    S::check(extents, "Tensor");
    storage_.reset(DeviceAllocator<D>::allocate(sizeof(T) * static_cast<std::size_t>(size())));
  }

  Tensor(const extents_type& zeros, Unallocated) : extents_(zeros) {}

  std::unique_ptr<void, Free> storage_;
  extents_type extents_;
};

// ============================================================================

/// A copy of `t` in the memory of device To: host to device, device to host, or a plain
/// copy on one device. To the host it is complete when it returns; to a device, `t` may be
/// changed or freed when it returns, and work queued after it on the device's stream
/// (cuda::current_stream()) sees the copy (DeviceAllocator<Cuda>::copy_from_host).
template <Device To, class T, ShapeType S, Device From>
Tensor<T, S, To> to_device(const Tensor<T, S, From>& t) {
  if constexpr (std::is_same_v<To, From>) {
    return t;
  } else {
    static_assert(std::is_same_v<To, Cpu> || std::is_same_v<From, Cpu>, "to_device copies through the host");
    auto out = Tensor<T, S, To>::uninitialized(t.extents());
    const auto bytes = sizeof(T) * static_cast<std::size_t>(t.size());
    if constexpr (std::is_same_v<From, Cpu>) DeviceAllocator<To>::copy_from_host(out.data(), t.data(), bytes);
    else DeviceAllocator<From>::copy_to_host(out.data(), t.data(), bytes);
    return out;
  }
}

/// An rvalue already on To is moved, not copied (a mask made on the host for the model's
/// device, when that device is the host).
template <Device To, class T, ShapeType S, Device From>
Tensor<T, S, To> to_device(Tensor<T, S, From>&& t) {
  if constexpr (std::is_same_v<To, From>) return std::move(t);
  else return to_device<To>(std::as_const(t));
}

/// A host copy of `t` (the same as to_device<Cpu>).
template <class T, ShapeType S, Device From>
Tensor<T, S, Cpu> to_host(const Tensor<T, S, From>& t) {
  return to_device<Cpu>(t);
}

/// on_host's copy of a device tensor: a host tensor whose data() is refused on the
/// temporary itself, so that `on_host(x).data()` (a pointer into a copy freed at the end
/// of its statement; on the CPU, where on_host copies nothing, the same line works) does
/// not compile wherever on_host is instantiated for a device. Name the copy first.
template <class T, ShapeType S>
class HostCopy : public Tensor<T, S, Cpu> {
 public:
  explicit HostCopy(Tensor<T, S, Cpu>&& t) : Tensor<T, S, Cpu>(std::move(t)) {}
  const T* data() const& { return Tensor<T, S, Cpu>::data(); }
  const T* data() const&& = delete;  // on_host(x).data(): bind on_host(x) to a name first
};

/// `t`'s elements readable on the host: `t` itself when it is a host tensor (no copy), a
/// host copy otherwise (a HostCopy). Bind the result to `const auto&`.
template <class T, ShapeType S, Device From>
decltype(auto) on_host(const Tensor<T, S, From>& t) {
  if constexpr (std::is_same_v<From, Cpu>) return (t);
  else return HostCopy<T, S>(to_host(t));
}

namespace detail {

template <StoreOp Op, class D, class E, class T, std::size_t R>
void evaluate_on(const E& e, T* out, const std::array<index_t, R>& extents) {
  if constexpr (std::is_same_v<D, Cpu>) {
    e.template eval_into<Op>(out, extents);
  } else {
    static_assert(DeviceEvaluator<D>::available,
                  "assigning an expression to a device tensor needs the device evaluator: compile this file with "
                  "nvcc and include <ctdl/kernels/cuda/elementwise.cuh> before the assignment");
    if constexpr (DeviceEvaluator<D>::available) DeviceEvaluator<D>::template evaluate<Op>(e, out, extents);
  }
}

/// True when a value of shape From broadcasts to shape To without changing To.
template <class From, class To>
inline constexpr bool static_broadcasts_to = [] {
  if constexpr (From::rank > To::rank) {
    return false;
  } else {
    constexpr std::size_t off = To::rank - From::rank;
    for (std::size_t i = 0; i < From::rank; ++i) {
      const index_t f = From::static_extents[i], t = To::static_extents[off + i];
      if (f != dyn && t != dyn && f != t && f != 1) return false;
    }
    return true;
  }
}();

template <class T, class S, class E>
void check_assignable_expression() {
  using ES = typename E::shape_type;
  static_assert(std::is_same_v<T, typename E::value_type>,
                "element types differ: convert the expression with ctdl::cast<T>(...) first");
  static_assert(static_broadcasts_to<ES, S>,
                "static extents differ: the expression's shape does not broadcast to the tensor's shape");
}

template <class T, class S, class E>
void check_constructible_from_expression() {
  using ES = typename E::shape_type;
  static_assert(std::is_same_v<T, typename E::value_type>,
                "element types differ: convert the expression with ctdl::cast<T>(...) first");
  static_assert(static_extents_agree<ES, S>,
                "static extents differ: the expression's shape does not match the tensor's shape");
}

template <std::size_t R>
std::array<index_t, R> row_major_strides(const std::array<index_t, R>& extents) {
  std::array<index_t, R> s{};
  index_t acc = 1;
  for (std::size_t i = R; i-- > 0;) {
    s[i] = acc;
    acc *= extents[i];
  }
  return s;
}

}  // namespace detail
}  // namespace ctdl
