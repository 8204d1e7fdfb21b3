// How a tensor is split over the tensor-parallel group (Megatron layout), and
// the copies between a global tensor and one rank's shard. The same
// description drives TP initialisation, consolidated weight files and
// checkpoint resharding.
//
// A tensor of global shape (d0[, d1]) sharded on `axis` with `parts` parts:
// the axis (length L) is viewed as `parts` equal blocks (e.g. q | k | v for
// the fused QKV projection), and TP rank r holds, from every block, the
// sub-block [r * L/(parts*tp), (r+1) * L/(parts*tp)); its local tensor is those
// sub-blocks concatenated along the axis, row-major. axis = -1: replicated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace chorus::nn {

struct ShardSpec {
  std::vector<int64_t> global_shape;  // 1-D or 2-D
  int axis = -1;                      // -1 replicated, 0 rows, 1 columns
  int parts = 1;                      // blocks along the axis sharded separately
};

// Local shape of rank r of tp (same for every rank; throws if not divisible).
std::vector<int64_t> local_shape(const ShardSpec& s, int tp);
size_t local_numel(const ShardSpec& s, int tp);
// Copies rank r's shard out of the global tensor.
void slice_shard(const ShardSpec& s, int tp_rank, int tp, const float* global, float* local);
// Writes rank r's shard into its place in the global tensor.
void place_shard(const ShardSpec& s, int tp_rank, int tp, const float* local, float* global);

}  // namespace chorus::nn
