#pragma once
// Batch: one batch of token sequences, the type the data pipeline fills and the models
// read (data::Batch and bert::Batch name it), so that a batch goes from the batcher to
// forward() by reference, never copied.
//
// It lives in core/ because both data/ (which makes batches) and models/ (which consume
// them) sit above core and neither may include the other.
//
//   input_ids, token_type_ids, attention_mask   B x S int32 (mask: 1 = real token, 0 = [PAD])
//   labels   one class id per sequence (sequence classification) or B x S row-major
//            (token classification; -1 = not scored), as train::classification_loss takes
//            them (ops::cross_entropy with a mask);
//            empty when the batch is only run forward
//   rows     each sequence's row in the feature cache it came from (empty when it came
//            from elsewhere)
//
// The attention mask follows from the ids by one rule, written here once:
// attention_mask(id, pad_id) is 0 exactly at [PAD] (the span features' left padding too)
// and 1 elsewhere, as the original pipeline's input_mask.

#include <cstdint>
#include <vector>

#include "ctdl/core/tensor.hpp"

namespace ctdl {

/// The attention mask of one token: 0 at [PAD], 1 elsewhere.
constexpr std::int32_t attention_mask(std::int32_t id, std::int32_t pad_id) { return id != pad_id ? 1 : 0; }

struct Batch {
  using Ids = Tensor<std::int32_t, Shape<dyn, dyn>>;
  Ids input_ids, token_type_ids, attention_mask;
  Tensor<std::int32_t, Shape<dyn>> labels = {};
  std::vector<std::size_t> rows = {};

  /// Sequences in the batch (B).
  index_t batch() const { return input_ids.extent(0); }
  /// Tokens per sequence (S).
  index_t seq_len() const { return input_ids.extent(1); }
  /// Sequences in the batch (B; 0 for a rank's empty share of a last, short batch).
  index_t size() const { return input_ids.extent(0); }
};

}  // namespace ctdl
