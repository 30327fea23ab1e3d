#pragma once
// Modules are aggregates: plain structs of parameters (Vars), sub-modules, and vectors
// of sub-modules, plus any configuration fields. Boost.PFR visits the fields, so
// initialisation, counting, optimizers, all-reduce and checkpoints are written once.
//
// The contract (concept Module):
//   - M is an aggregate with a `static constexpr std::array names` giving, in field
//     order, the checkpoint name of every parameter, sub-module and module vector field
//     (configuration fields are not named and not visited);
//   - names match the Hugging Face checkpoint names, so the dotted path of a parameter
//     ("encoder.layer.3.attention.self.query.weight") is its checkpoint key.
// The count of named fields is checked against `names` at compile time.

#include <boost/pfr.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ctdl/autograd/var.hpp"
#include "ctdl/core/philox.hpp"

namespace ctdl::nn {

template <class M>
concept Module = std::is_aggregate_v<M> && requires { M::names; };

/// The fields of module m as a tuple of references, in declaration order: Boost.PFR's
/// structure_tie, unless M declares its own `tie()` (const and non-const). nvcc's front
/// end cannot count the fields of an aggregate that has only one (PFR's count is
/// ambiguous there): a one-field module declares tie() (nn::Embedding, BertEncoder).
template <class M>
auto fields(M& m) {
  if constexpr (requires { m.tie(); }) return m.tie();
  else return boost::pfr::structure_tie(m);
}
template <class M>
using fields_t = decltype(fields(std::declval<M&>()));
/// How many fields M has, and the type of field I.
template <class M>
inline constexpr std::size_t field_count_v = std::tuple_size_v<fields_t<M>>;
template <std::size_t I, class M>
using field_t = std::remove_cvref_t<std::tuple_element_t<I, fields_t<M>>>;

template <class F>
struct is_module_vector : std::false_type {};
template <class M>
struct is_module_vector<std::vector<M>> : std::bool_constant<Module<M>> {};

/// Whether field type F is visited (a parameter, a sub-module, or a vector of modules).
template <class F>
inline constexpr bool is_visited_field_v = is_var<F>::value || Module<F> || is_module_vector<F>::value;

template <class M>
constexpr std::size_t visited_field_count() {
  return []<std::size_t... I>(std::index_sequence<I...>) {
    return (std::size_t{0} + ... + (is_visited_field_v<field_t<I, M>> ? 1 : 0));
  }(std::make_index_sequence<field_count_v<M>>{});
}

namespace detail {
template <class F>
struct field_device {
  using type = void;
};
template <class T, class S, class D>
struct field_device<Var<T, S, D>> {
  using type = D;
};
template <class M>
struct field_device<std::vector<M>> : field_device<M> {};
template <class... F>
struct first_device {
  using type = void;
};
template <class F, class... Rest>
struct first_device<F, Rest...> {
  using here = typename field_device<F>::type;
  using type = std::conditional_t<!std::is_void_v<here>, here, typename first_device<Rest...>::type>;
};
template <class M, class I = std::make_index_sequence<field_count_v<M>>>
struct module_device;
template <class M, std::size_t... I>
struct module_device<M, std::index_sequence<I...>> {
  using type = typename first_device<field_t<I, M>...>::type;
};
template <class M>
  requires Module<M>
struct field_device<M> : module_device<M> {};
}  // namespace detail

/// The device of a module's parameters (its first parameter's: Cpu or Cuda).
template <Module M>
using device_of_t = typename detail::field_device<M>::type;

/// Calls fn(name, var) for every parameter of m, depth first in field order, with
/// dotted checkpoint names (vector elements are numbered: "layer.0.").
template <Module M, class Fn>
void visit_parameters(M& m, Fn&& fn, const std::string& prefix = "");

/// The module type M with its parameters on device D: specialised by each model family
/// (models/bert/model.hpp), so that generic code (checkpoints of a model on the GPU)
/// can name the host twin of a device model.
template <class M, class D>
struct rebind_device;
template <class M, class D>
using on_device_t = typename rebind_device<M, D>::type;

/// A copy of module `src` as module type MD, the same module on another device (a BERT
/// built on the host, from init_weights or a checkpoint, copied to the GPU as
/// BertForSequenceClassification<..., Cuda>, or back for saving): every parameter's
/// value copied to MD's device with its requires_grad and weight_decay, vectors of
/// modules sized as src's, configuration fields (eps, BertConfig) copied. MD and src must
/// have the same fields in the same order, differing only in their parameters' device.
template <Module MD, Module MS>
MD to_device(const MS& src);

/// Copies every parameter value of `src` into the parameters of `dst` in place (a
/// checkpoint read on the host, loaded into the model on the GPU): dst keeps its Vars,
/// their nodes and their storage, so whatever holds them (a gradient averager, ZeRO-1's
/// parameter list) stays valid, which replacing dst with to_device's copy would not.
/// The two may be on different devices; each value is marked changed (Var::value()).
/// Throws ShapeError naming the first parameter whose extents differ, and Error when a
/// vector of modules (BERT's layers) differs in length; configuration fields are not
/// copied.
template <Module MD, Module MS>
void copy_values(MD& dst, const MS& src);

/// The number of scalar parameters of m.
template <Module M>
std::int64_t count_parameters(M& m) {
  std::int64_t n = 0;
  visit_parameters(m, [&](const std::string&, auto& v) { n += v.value().size(); });
  return n;
}

/// What a module's forward needs besides its inputs: the tape, whether it is training
/// (dropout on), and the random streams for dropout. Each dropout site takes the next
/// tensor id, so the numbers depend only on (seed, step, rank, position in the forward).
struct Context {
  Tape& tape;
  bool training = false;
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
  std::uint32_t rank = 0;
  std::uint32_t next_tensor_id = 0;

  RandomStream next_stream() { return {seed, rank, next_tensor_id++, step}; }
};

// ============================================================================

template <Module M, class Fn>
void visit_parameters(M& m, Fn&& fn, const std::string& prefix) {
  static_assert(visited_field_count<M>() == M::names.size(),
                "a module's `names` must name every parameter, sub-module and module vector field, in order");
  std::size_t k = 0;
  auto visit_field = [&](auto& field) {
    using F = std::remove_cvref_t<decltype(field)>;
    if constexpr (is_visited_field_v<F>) {
      const std::string name = prefix + M::names[k++];
      if constexpr (is_var<F>::value) {
        fn(name, field);
      } else if constexpr (Module<F>) {
        visit_parameters(field, fn, name + ".");
      } else {
        for (std::size_t i = 0; i < field.size(); ++i) visit_parameters(field[i], fn, name + "." + std::to_string(i) + ".");
      }
    }
  };
  std::apply([&](auto&... each) { (visit_field(each), ...); }, fields(m));
}

namespace detail {

template <class FD, class FS>
void copy_field_to_device(FD& dst, const FS& src) {
  if constexpr (is_var<FD>::value) {
    static_assert(is_var<FS>::value, "nn::to_device: a parameter faces a field that is not one");
    FD v(to_device<typename FD::device_type>(src.value()), src.requires_grad());
    v.set_weight_decay(src.weight_decay());
    dst = std::move(v);
  } else if constexpr (Module<FD>) {
    dst = to_device<FD>(src);
  } else if constexpr (is_module_vector<FD>::value) {
    dst.clear();
    dst.reserve(src.size());
    for (const auto& m : src) dst.push_back(to_device<typename FD::value_type>(m));
  } else {
    dst = src;  // configuration
  }
}

template <Module MD, Module MS>
void copy_values_named(MD& dst, const MS& src, const std::string& prefix);

template <class FD, class FS>
void copy_field_values(FD& dst, const FS& src, const std::string& name) {
  if constexpr (is_var<FD>::value) {
    static_assert(is_var<FS>::value, "nn::copy_values: a parameter faces a field that is not one");
    using DD = typename FD::device_type;
    using DS = typename FS::device_type;
    const auto& from = src.value();
    if (dst.extents() != from.extents()) {
      throw ShapeError("nn::copy_values: " + name + " is " + describe<typename FD::shape_type>(dst.extents()) +
                       " here but " + describe<typename FS::shape_type>(from.extents()) + " in the source");
    }
    auto& to = dst.value();
    const std::size_t bytes = sizeof(typename FD::value_type) * static_cast<std::size_t>(to.size());
    if constexpr (std::is_same_v<DS, Cpu>) DeviceAllocator<DD>::copy_from_host(to.data(), from.data(), bytes);
    else if constexpr (std::is_same_v<DD, Cpu>) DeviceAllocator<DS>::copy_to_host(to.data(), from.data(), bytes);
    else static_assert(!std::is_same_v<DD, DD>, "nn::copy_values copies through the host");
  } else if constexpr (Module<FD>) {
    copy_values_named(dst, src, name + ".");
  } else if constexpr (is_module_vector<FD>::value) {
    if (dst.size() != src.size()) {
      throw Error("nn::copy_values: " + name + " has " + std::to_string(dst.size()) + " modules here but " +
                  std::to_string(src.size()) + " in the source");
    }
    for (std::size_t i = 0; i < dst.size(); ++i) copy_values_named(dst[i], src[i], name + "." + std::to_string(i) + ".");
  }
}

template <Module MD, Module MS>
void copy_values_named(MD& dst, const MS& src, const std::string& prefix) {
  static_assert(field_count_v<MD> == field_count_v<const MS>, "nn::copy_values: the two module types have different fields");
  auto to = fields(dst);
  const auto from = fields(src);
  std::size_t k = 0;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    const auto one = [&](auto& d, const auto& s) {
      using F = std::remove_cvref_t<decltype(d)>;
      if constexpr (is_visited_field_v<F>) copy_field_values(d, s, prefix + std::string(MD::names[k++]));
    };
    (one(std::get<I>(to), std::get<I>(from)), ...);
  }(std::make_index_sequence<field_count_v<MD>>{});
}

}  // namespace detail

template <Module MD, Module MS>
void copy_values(MD& dst, const MS& src) {
  detail::copy_values_named(dst, src, "");
}

template <Module MD, Module MS>
MD to_device(const MS& src) {
  static_assert(field_count_v<MD> == field_count_v<const MS>, "nn::to_device: the two module types have different fields");
  MD dst{};
  auto to = fields(dst);
  const auto from = fields(src);
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (detail::copy_field_to_device(std::get<I>(to), std::get<I>(from)), ...);
  }(std::make_index_sequence<field_count_v<MD>>{});
  return dst;
}

}  // namespace ctdl::nn
