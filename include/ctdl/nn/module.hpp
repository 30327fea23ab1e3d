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
#include <type_traits>
#include <vector>

#include "ctdl/autograd/var.hpp"
#include "ctdl/core/philox.hpp"

namespace ctdl::nn {

template <class M>
concept Module = std::is_aggregate_v<M> && requires { M::names; };

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
    return (std::size_t{0} + ... + (is_visited_field_v<boost::pfr::tuple_element_t<I, M>> ? 1 : 0));
  }(std::make_index_sequence<boost::pfr::tuple_size_v<M>>{});
}

/// Calls fn(name, var) for every parameter of m, depth first in field order, with
/// dotted checkpoint names (vector elements are numbered: "layer.0.").
template <Module M, class Fn>
void visit_parameters(M& m, Fn&& fn, const std::string& prefix = "");

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
  boost::pfr::for_each_field(m, [&](auto& field) {
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
  });
}

}  // namespace ctdl::nn
