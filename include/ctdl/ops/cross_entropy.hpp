#pragma once
// cross_entropy from logits, averaged over the examples that count.
//
// Shape contract: logits is Var<T, Shape<dyn, C>> (one row per example), labels is a
// Tensor<int32_t, Shape<dyn>> with one label per row; the optional mask (same extent,
// element type T) says which rows count (non-zero) — e.g. the first word piece of each
// word in token classification. The result is Var<T, Shape<>>.
//   loss = sum_n w_n * (logsumexp(logits[n]) - logits[n, labels[n]]) / sum_n w_n
// with w_n = 1, or the mask. Rows with w_n = 0 are ignored entirely (their label is not
// read); a counted label outside [0, C) throws ctdl::Error naming the row. With no row
// counted the loss is 0.
// Backward: dlogits[n] += dloss * w_n / sum(w) * (softmax(logits[n]) - onehot(labels[n]))
//
// Devices: logits may be on Cuda (kernels/cuda/cross_entropy.cuh, the CPU's rounding
// points); labels and mask are host tensors on either device (the labels come from the
// data pipeline): checked on the host with the CPU's message, then copied up.

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/ops/dispatch.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/cross_entropy.cuh"
#endif

namespace ctdl::ops {

template <class T, index_t C, Device D>
Var<T, Shape<>, D> cross_entropy(Tape& tape, const Var<T, Shape<dyn, C>, D>& logits,
                                 const Tensor<std::int32_t, Shape<dyn>>& labels);
template <class T, index_t C, Device D>
Var<T, Shape<>, D> cross_entropy(Tape& tape, const Var<T, Shape<dyn, C>, D>& logits,
                                 const Tensor<std::int32_t, Shape<dyn>>& labels, const Tensor<T, Shape<dyn>>& mask);

// ============================================================================

namespace detail {

template <class T, index_t C>
struct CrossEntropyEntry final : TapeEntry {
  GradRef<T, Shape<dyn, C>> logits;
  GradRef<T, Shape<>> loss;
  Tensor<T, Shape<dyn, C>> probs;
  std::vector<std::int32_t> labels;
  std::vector<double> weight;  // w_n / sum(w)
  CrossEntropyEntry(GradRef<T, Shape<dyn, C>> l, GradRef<T, Shape<>> loss_, Tensor<T, Shape<dyn, C>> p,
                    std::vector<std::int32_t> lab, std::vector<double> w)
      : logits(std::move(l)), loss(std::move(loss_)), probs(std::move(p)), labels(std::move(lab)), weight(std::move(w)) {}
  const char* name() const override { return "cross_entropy"; }
  void backward() override {
    if (!loss.has_grad()) return;
    const double up = convert<double>(loss.grad().item());
    const index_t c = probs.extent(1);
    T* g = logits.node_ptr()->grad_data();
    for (std::size_t n = 0; n < labels.size(); ++n) {
      if (weight[n] == 0) continue;
      const double s = up * weight[n];
      for (index_t j = 0; j < c; ++j) {
        const double p = convert<double>(probs.data()[n * c + j]) - (j == labels[n] ? 1.0 : 0.0);
        T& dst = g[n * c + j];
        dst = convert<T>(convert<double>(dst) + s * p);
      }
    }
  }
};

#if CTDL_CUDA_OPS
template <class T, index_t C>
struct CrossEntropyCudaEntry final : TapeEntry {
  GradRef<T, Shape<dyn, C>, Cuda> logits;
  GradRef<T, Shape<>, Cuda> loss;
  Tensor<T, Shape<dyn, C>, Cuda> probs;
  Tensor<std::int32_t, Shape<dyn>, Cuda> labels;
  Tensor<T, Shape<dyn>, Cuda> mask;            // empty: every row counts
  Tensor<double, Shape<>, Cuda> total_weight;  // sum(w), written by the forward
  CrossEntropyCudaEntry(GradRef<T, Shape<dyn, C>, Cuda> l, GradRef<T, Shape<>, Cuda> loss_,
                        Tensor<T, Shape<dyn, C>, Cuda> p, Tensor<std::int32_t, Shape<dyn>, Cuda> lab,
                        Tensor<T, Shape<dyn>, Cuda> m, Tensor<double, Shape<>, Cuda> w)
      : logits(std::move(l)), loss(std::move(loss_)), probs(std::move(p)), labels(std::move(lab)), mask(std::move(m)),
        total_weight(std::move(w)) {}
  const char* name() const override { return "cross_entropy"; }
  void backward() override {
    if (!loss.has_grad()) return;
    const index_t n = probs.extent(0), c = probs.extent(1);
    cuda::cross_entropy_backward(probs.data(), labels.data(), mask.size() ? mask.data() : nullptr,
                                 total_weight.data(), loss.grad().data(), logits.node_ptr()->grad_data(), n, c);
  }
};

/// The CUDA forward; labels and mask (null: none) on the host, checked there first.
template <class T, index_t C>
Var<T, Shape<>, Cuda> cross_entropy_cuda(Tape& tape, const Var<T, Shape<dyn, C>, Cuda>& logits,
                                         const Tensor<std::int32_t, Shape<dyn>>& labels,
                                         const Tensor<T, Shape<dyn>>* mask) {
  const index_t n = logits.extents()[0], c = logits.extents()[1];
  cuda::check_labels_on_host(labels.data(), mask ? mask->data() : static_cast<const T*>(nullptr), n, c);
  auto labels_d = to_device<Cuda>(labels);
  auto mask_d = mask ? to_device<Cuda>(*mask) : Tensor<T, Shape<dyn>, Cuda>();
  auto probs = Tensor<T, Shape<dyn, C>, Cuda>::uninitialized(logits.extents());
  Tensor<T, Shape<>, Cuda> value;
  Tensor<double, Shape<>, Cuda> total_weight;
  Tensor<double, Shape<dyn>, Cuda> row_losses({cuda::cross_entropy_workspace(n)});
  cuda::cross_entropy_forward(logits.value().data(), labels_d.data(), mask ? mask_d.data() : nullptr, probs.data(),
                              value.data(), total_weight.data(), row_losses.data(), n, c);
  const bool needs_grad = tape.recording() && logits.requires_grad();
  auto out = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    tape.push(std::make_unique<CrossEntropyCudaEntry<T, C>>(logits, out, std::move(probs), std::move(labels_d),
                                                            std::move(mask_d), std::move(total_weight)));
  }
  return out;
}
#endif

template <class T, index_t C>
void check_label_count(const Extents<Shape<dyn, C>>& logits, const Tensor<std::int32_t, Shape<dyn>>& labels) {
  if (labels.size() != logits[0]) {
    throw ShapeError("cross_entropy: " + std::to_string(labels.size()) + " labels for " +
                     describe<Shape<dyn, C>>(logits) + " logits");
  }
}

template <class T, index_t C>
Var<T, Shape<>> cross_entropy_impl(Tape& tape, const Var<T, Shape<dyn, C>>& logits,
                                   const Tensor<std::int32_t, Shape<dyn>>& labels, const T* mask) {
  const index_t n = logits.extents()[0], c = logits.extents()[1];
  std::vector<double> w(static_cast<std::size_t>(n));
  double total = 0;
  for (index_t i = 0; i < n; ++i) {
    w[i] = mask ? convert<double>(mask[i]) : 1.0;
    if (w[i] != 0 && (labels.data()[i] < 0 || labels.data()[i] >= c)) {
      throw Error("cross_entropy: label " + std::to_string(labels.data()[i]) + " of row " + std::to_string(i) +
                  " is outside [0, " + std::to_string(c) + ")");
    }
    total += w[i];
  }
  // Row-wise log-softmax, in double for the loss value.
  const auto m = ctdl::max(logits.value(), last_axis);
  Tensor<T, Shape<dyn, C>> probs = exp(logits.value() - m);
  const auto s = ctdl::sum(probs, last_axis);
  probs = lazy(probs) / s;
  double loss = 0;
  for (index_t i = 0; i < n; ++i) {
    if (w[i] == 0) continue;
    const double lse = convert<double>(m.data()[i]) + std::log(convert<double>(s.data()[i]));
    loss += w[i] * (lse - convert<double>(logits.value().data()[i * c + labels.data()[i]]));
  }
  for (double& x : w) x = total > 0 ? x / total : 0.0;
  Tensor<T, Shape<>> value;
  value.item() = convert<T>(total > 0 ? loss / total : 0.0);
  const bool needs_grad = tape.recording() && logits.requires_grad();
  auto out = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    tape.push(std::make_unique<CrossEntropyEntry<T, C>>(
        logits, out, std::move(probs), std::vector<std::int32_t>(labels.data(), labels.data() + n), std::move(w)));
  }
  return out;
}

}  // namespace detail

template <class T, index_t C, Device D>
Var<T, Shape<>, D> cross_entropy(Tape& tape, const Var<T, Shape<dyn, C>, D>& logits,
                                 const Tensor<std::int32_t, Shape<dyn>>& labels) {
  require_kernels<D>();
  detail::check_label_count<T, C>(logits.extents(), labels);
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    return detail::cross_entropy_cuda(tape, logits, labels, static_cast<const Tensor<T, Shape<dyn>>*>(nullptr));
#endif
  } else {
    return detail::cross_entropy_impl(tape, logits, labels, static_cast<const T*>(nullptr));
  }
}

template <class T, index_t C, Device D>
Var<T, Shape<>, D> cross_entropy(Tape& tape, const Var<T, Shape<dyn, C>, D>& logits,
                                 const Tensor<std::int32_t, Shape<dyn>>& labels, const Tensor<T, Shape<dyn>>& mask) {
  require_kernels<D>();
  detail::check_label_count<T, C>(logits.extents(), labels);
  if (mask.size() != labels.size()) {
    throw ShapeError("cross_entropy: mask of " + std::to_string(mask.size()) + " for " + std::to_string(labels.size()) +
                     " labels");
  }
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    return detail::cross_entropy_cuda(tape, logits, labels, &mask);
#endif
  } else {
    return detail::cross_entropy_impl(tape, logits, labels, mask.data());
  }
}

}  // namespace ctdl::ops
