#pragma once
// The one place that knows which oneDNN API generation ctdl is compiled against.
//
// ctdl supports oneDNN 2.x (Debian 12's libdnnl-dev is 2.6) and 3.x (current releases;
// PyPI's onednn-devel-cpu-gomp). Their difference for what ctdl uses: 3.x removed the
// operation descriptors (`dnnl::matmul::desc`); a primitive_desc is built directly from
// the engine first, then the memory descriptors, then the attributes. Memory
// descriptors, memories, reorders, post-ops and execution are spelled the same in both.
// Code elsewhere builds matmul primitive descriptors only through matmul_pd below, so
// version checks stay here.
//
// Only included when ctdl is built with oneDNN (CTDL_WITH_ONEDNN).

#include <oneapi/dnnl/dnnl.hpp>

#if !defined(DNNL_VERSION_MAJOR) || DNNL_VERSION_MAJOR < 2
#error "ctdl needs oneDNN 2.x or 3.x (DNNL_VERSION_MAJOR from oneapi/dnnl/dnnl_version.h is missing or below 2)"
#endif

namespace ctdl::kernels::cpu::dnnl_compat {

/// The oneDNN version of the headers ctdl was compiled against (2.6 on Debian 12).
inline constexpr int header_major = DNNL_VERSION_MAJOR;
inline constexpr int header_minor = DNNL_VERSION_MINOR;

/// A matmul primitive descriptor for src (M x K) · weights (K x N) -> dst (M x N),
/// batched by a leading dimension where the descriptors have one, on `engine`.
/// Throws dnnl::error when no implementation supports the problem (either version).
inline dnnl::matmul::primitive_desc matmul_pd(const dnnl::engine& engine, const dnnl::memory::desc& src,
                                              const dnnl::memory::desc& weights, const dnnl::memory::desc& dst,
                                              const dnnl::primitive_attr& attr = dnnl::primitive_attr()) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::matmul::primitive_desc(engine, src, weights, dst, attr);
#else
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), attr, engine);
#endif
}

}  // namespace ctdl::kernels::cpu::dnnl_compat
