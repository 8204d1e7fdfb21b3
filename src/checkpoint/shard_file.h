// The two HDF5 files of a sharded checkpoint (docs/CHECKPOINTS.md).
//
// model-tpRR.h5 (one per TP rank): root attributes format =
// "chorus-checkpoint-model", version, tp_rank, tp_size, step; one float32
// dataset /params/<name> per tensor holding this TP rank's shard in its local
// shape, with attributes global_shape, tp_axis, tp_parts, tp_rank, tp_size
// (the slice it holds is shard tp_rank of tp_size along tp_axis, per
// nn/tp_shard.h).
//
// optim-tpRR-dpDD.h5 (one per stored optimizer slice): root attributes format
// = "chorus-checkpoint-optimizer", version, tp_rank, tp_size, dp_rank,
// dp_size, zero, step, flat_begin, flat_end, flat_numel; groups /exp_avg and
// /exp_avg_sq (Adam's first and second moments) with one 1-D float32 dataset
// per tensor that overlaps [flat_begin, flat_end), holding elements
// [local_begin, local_end) of that tensor's TP shard (row-major), with
// attributes global_shape, tp_axis, tp_parts, tp_rank, tp_size, local_shape,
// local_begin, local_end. The fp32 master weights are the model files'
// tensors (fp32 training: the parameters are the masters).
//
// Files are written with object time stamps off, so the same state always
// gives byte-identical files. Readers check every attribute and shape against
// the tensor table and name the file and tensor on any mismatch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/layout.h"
#include "checkpoint/manifest.h"

namespace chorus::checkpoint {

inline constexpr const char* kModelFileFormat = "chorus-checkpoint-model";
inline constexpr const char* kOptimizerFileFormat = "chorus-checkpoint-optimizer";
inline constexpr int64_t kShardFileVersion = 1;

// params: TP rank tp_rank's flat buffer; offsets: each tensor's offset in it.
void write_model_file(const std::string& path, const std::vector<TensorInfo>& tensors,
                      const std::vector<size_t>& offsets, const float* params, int tp_rank, int tp_size,
                      int64_t step);

// The optimizer slice `range` of TP rank tp_rank's flat buffer (n_local
// floats): exp_avg / exp_avg_sq point at element range.begin.
void write_optimizer_file(const std::string& path, const std::vector<TensorInfo>& tensors,
                          const std::vector<size_t>& offsets, size_t n_local, FlatRange range,
                          const float* exp_avg, const float* exp_avg_sq, const Layout& layout, int tp_rank,
                          int dp_rank, int64_t step);

// Reads every tensor of a model file written for (tp_rank, tp_size); dest(i)
// returns where tensor i's shard (tensors[i].local_numel(tp_size) floats) goes.
void read_model_file(const std::string& path, const std::vector<TensorInfo>& tensors, int tp_rank,
                     int tp_size, const std::function<float*(size_t)>& dest);

// One dataset pair of an optimizer file: elements [begin, end) of tensor
// `tensor`'s TP shard.
struct OptimizerPiece {
  size_t tensor = 0;
  size_t begin = 0, end = 0;
  const float* exp_avg = nullptr;
  const float* exp_avg_sq = nullptr;
};
// Reads an optimizer file whose manifest entry is `rec` (checks its root
// attributes against it and tp_size) and calls fn for every piece.
void read_optimizer_file(const std::string& path, const std::vector<TensorInfo>& tensors,
                         const FileRecord& rec, int tp_size,
                         const std::function<void(const OptimizerPiece&)>& fn);

}  // namespace chorus::checkpoint
