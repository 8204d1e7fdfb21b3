#include "nn/tp_shard.h"

#include <cstring>

#include "core/error.h"

namespace chorus::nn {

namespace {

// Visits the (global offset, local offset, length) runs of rank r's shard.
template <class F>
void for_each_run(const ShardSpec& s, int r, int tp, F&& f) {
  const auto& g = s.global_shape;
  CHORUS_CHECK(!g.empty() && g.size() <= 3, "tp shard: tensors must be 1-D to 3-D, got %zu dims", g.size());
  if (s.axis < 0 || tp == 1) {  // replicated (any rank <= 3, e.g. a Conv1d weight): one run
    size_t n = 1;
    for (int64_t d : g) n *= static_cast<size_t>(d);
    f(size_t(0), size_t(0), n);
    return;
  }
  CHORUS_CHECK(g.size() <= 2, "tp shard: a sharded tensor must be 1-D or 2-D, got %zu dims", g.size());
  const size_t rows = static_cast<size_t>(g[0]), cols = g.size() == 2 ? static_cast<size_t>(g[1]) : 1;
  const size_t L = s.axis == 0 ? rows : cols;
  const size_t block = L / static_cast<size_t>(s.parts), sub = block / static_cast<size_t>(tp);
  if (s.axis == 0) {
    size_t local = 0;
    for (int p = 0; p < s.parts; ++p) {
      const size_t row0 = p * block + static_cast<size_t>(r) * sub;
      f(row0 * cols, local, sub * cols);
      local += sub * cols;
    }
  } else {
    const size_t local_cols = L / static_cast<size_t>(tp);
    for (size_t row = 0; row < rows; ++row)
      for (int p = 0; p < s.parts; ++p) {
        const size_t col0 = p * block + static_cast<size_t>(r) * sub;
        f(row * cols + col0, row * local_cols + static_cast<size_t>(p) * sub, sub);
      }
  }
}

}  // namespace

std::vector<int64_t> local_shape(const ShardSpec& s, int tp) {
  std::vector<int64_t> out = s.global_shape;
  if (s.axis < 0) return out;
  CHORUS_CHECK(s.axis < static_cast<int>(out.size()), "tp shard: axis %d of a %zu-D tensor", s.axis, out.size());
  const int64_t L = out[static_cast<size_t>(s.axis)];
  CHORUS_CHECK(s.parts >= 1 && L % (static_cast<int64_t>(s.parts) * tp) == 0,
               "tp shard: axis length %lld is not divisible by %d parts x tp %d", static_cast<long long>(L), s.parts,
               tp);
  out[static_cast<size_t>(s.axis)] = L / tp;
  return out;
}

size_t local_numel(const ShardSpec& s, int tp) {
  size_t n = 1;
  for (auto d : local_shape(s, tp)) n *= static_cast<size_t>(d);
  return n;
}

void slice_shard(const ShardSpec& s, int tp_rank, int tp, const float* global, float* local) {
  local_shape(s, tp);  // validates
  for_each_run(s, tp_rank, tp, [&](size_t g, size_t l, size_t n) { std::memcpy(local + l, global + g, n * sizeof(float)); });
}

void place_shard(const ShardSpec& s, int tp_rank, int tp, const float* local, float* global) {
  local_shape(s, tp);
  for_each_run(s, tp_rank, tp, [&](size_t g, size_t l, size_t n) { std::memcpy(global + g, local + l, n * sizeof(float)); });
}

}  // namespace chorus::nn
