#include "checkpoint/layout.h"

#include <cctype>

#include "core/error.h"
#include "dist/communicator.h"

namespace chorus::checkpoint {

size_t TensorInfo::global_numel() const {
  size_t n = 1;
  for (auto d : global_shape) n *= static_cast<size_t>(d);
  return n;
}

std::string Layout::describe() const { return strfmt("tp %d x dp %d, zero %d", tp, dp, zero); }

void Layout::validate(const std::string& where) const {
  CHORUS_CHECK(tp >= 1, "%s: layout 'tp' must be >= 1, got %d", where.c_str(), tp);
  CHORUS_CHECK(dp >= 1, "%s: layout 'dp' must be >= 1, got %d", where.c_str(), dp);
  CHORUS_CHECK(zero == 0 || zero == 1, "%s: layout 'zero' must be 0 or 1, got %d", where.c_str(), zero);
}

std::vector<size_t> local_offsets(const std::vector<TensorInfo>& tensors, int tp, size_t* n_local) {
  std::vector<size_t> out;
  out.reserve(tensors.size());
  size_t off = 0;
  for (const auto& t : tensors) {
    out.push_back(off);
    off += t.local_numel(tp);
  }
  if (n_local) *n_local = off;
  return out;
}

FlatRange optimizer_range(size_t n_local, const Layout& layout, int dp_rank) {
  if (layout.zero == 0) return {0, n_local};
  return {dist::chunk_begin(n_local, layout.dp, dp_rank), dist::chunk_begin(n_local, layout.dp, dp_rank + 1)};
}

std::string model_file_name(int tp_rank) { return strfmt("model-tp%02d.h5", tp_rank); }

std::string optimizer_file_name(int tp_rank, int dp_rank) {
  return strfmt("optim-tp%02d-dp%02d.h5", tp_rank, dp_rank);
}

std::string step_dir_name(int64_t step) { return strfmt("step-%08lld", static_cast<long long>(step)); }

int64_t parse_step_dir_name(const std::string& name) {
  const std::string prefix = "step-";
  if (name.size() < prefix.size() + 8 || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t v = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
    if (v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

}  // namespace chorus::checkpoint
