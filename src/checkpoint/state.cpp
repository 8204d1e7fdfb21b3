#include "checkpoint/state.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "checkpoint/durable.h"
#include "checkpoint/shard_file.h"
#include "core/error.h"

namespace chorus::checkpoint {

namespace fs = std::filesystem;

namespace {

// "" when the file matches its record, else what is wrong with it.
std::string check_file(const std::string& dir, const FileRecord& f) {
  const std::string path = (fs::path(dir) / f.path).string();
  std::error_code ec;
  if (!fs::exists(path, ec))
    return strfmt("checkpoint file '%s' is missing (listed in the manifest as the %s shard of TP rank %d)",
                  path.c_str(), f.kind.c_str(), f.tp_rank);
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return strfmt("checkpoint file '%s' cannot be read: %s", path.c_str(), ec.message().c_str());
  if (size != f.bytes)
    return strfmt("checkpoint file '%s' is %llu bytes but the manifest records %llu (%s)", path.c_str(),
                  static_cast<unsigned long long>(size), static_cast<unsigned long long>(f.bytes),
                  size < f.bytes ? "truncated" : "wrong size");
  FileDigest d;
  try {
    d = digest_file(path);
  } catch (const Error& e) {
    return e.what();
  }
  if (d.bytes != f.bytes)
    return strfmt("checkpoint file '%s' changed size while being read (%llu bytes)", path.c_str(),
                  static_cast<unsigned long long>(d.bytes));
  if (d.sha256 != f.sha256)
    return strfmt("checkpoint file '%s' has SHA-256 %s but the manifest records %s (corrupt file)",
                  path.c_str(), d.sha256.c_str(), f.sha256.c_str());
  return "";
}

std::vector<std::string> check_files(const std::string& dir, const std::vector<const FileRecord*>& files) {
  std::vector<std::string> problems(files.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < files.size(); ++i) problems[i] = check_file(dir, *files[i]);
  std::vector<std::string> out;
  for (auto& p : problems)
    if (!p.empty()) out.push_back(std::move(p));
  return out;
}

}  // namespace

void verify_files(const std::string& dir, const std::vector<const FileRecord*>& files) {
  auto problems = check_files(dir, files);
  if (!problems.empty()) throw CorruptCheckpoint(problems.front());
}

std::vector<std::string> check_all_files(const std::string& dir, const Manifest& m) {
  std::vector<const FileRecord*> all;
  for (const auto& f : m.files) all.push_back(&f);
  return check_files(dir, all);
}

size_t first_nonfinite(const float* p, size_t n) {
  size_t first = n;
#pragma omp parallel for reduction(min : first) schedule(static)
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i]) && i < first) first = i;
  return first;
}

std::vector<std::string> check_finite(const std::string& dir, const Manifest& m) {
  const int T = m.layout.tp;
  size_t n_local = 0;
  const auto loff = local_offsets(m.tensors, T, &n_local);
  std::vector<std::string> out;
  // p[0, n) is elements [base, base + n) of tensor i's TP shard.
  auto check = [&](const std::string& path, const char* what, size_t i, const float* p, size_t n, size_t base) {
    const size_t at = first_nonfinite(p, n);
    if (at < n)
      out.push_back(strfmt("checkpoint file '%s': %s of tensor '%s' holds %g at element %zu of its TP shard (NaN "
                           "and Inf are never valid: the run that saved it had diverged)",
                           path.c_str(), what, m.tensors[i].name.c_str(), static_cast<double>(p[at]), base + at));
  };
  std::vector<float> shard(n_local);
  for (const auto& f : m.files) {
    const std::string path = (fs::path(dir) / f.path).string();
    if (f.kind == "model") {
      read_model_file(path, m.tensors, f.tp_rank, T, [&](size_t i) { return shard.data() + loff[i]; });
      for (size_t i = 0; i < m.tensors.size(); ++i)
        check(path, "the parameters", i, shard.data() + loff[i], m.tensors[i].local_numel(T), 0);
      continue;
    }
    read_optimizer_file(path, m.tensors, f, T, [&](const OptimizerPiece& p) {
      check(path, "exp_avg", p.tensor, p.exp_avg, p.end - p.begin, p.begin);
      check(path, "exp_avg_sq", p.tensor, p.exp_avg_sq, p.end - p.begin, p.begin);
    });
  }
  return out;
}

GlobalState read_global(const std::string& dir, const Manifest& m, bool with_optimizer) {
  const auto& tensors = m.tensors;
  const int T = m.layout.tp;
  std::vector<const FileRecord*> files;
  for (const auto& f : m.files)
    if (f.kind == "model" || with_optimizer) files.push_back(&f);
  verify_files(dir, files);

  GlobalState g;
  g.offsets = global_offsets(tensors, &g.n_global);
  size_t n_local = 0;
  const auto loff = local_offsets(tensors, T, &n_local);
  g.params.assign(g.n_global, 0.0f);
  std::vector<float> scratch(n_local);
  for (int t = 0; t < T; ++t) {
    const FileRecord* rec = nullptr;
    for (const auto& f : m.files)
      if (f.kind == "model" && f.tp_rank == t) rec = &f;
    CHORUS_CHECK(rec, "checkpoint '%s': no model file for TP rank %d", dir.c_str(), t);
    read_model_file((fs::path(dir) / rec->path).string(), tensors, t, T,
                    [&](size_t i) { return scratch.data() + loff[i]; });
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].tp_axis < 0 && t > 0) continue;  // replicated: TP rank 0's copy
      nn::place_shard(tensors[i].spec(), t, T, scratch.data() + loff[i], g.params.data() + g.offsets[i]);
    }
  }
  if (!with_optimizer) return g;

  g.exp_avg.assign(g.n_global, 0.0f);
  g.exp_avg_sq.assign(g.n_global, 0.0f);
  std::vector<float> sm(n_local), sv(n_local);
  for (int t = 0; t < T; ++t) {
    std::vector<size_t> covered(tensors.size(), 0);
    for (const auto& f : m.files) {
      if (f.kind != "optimizer" || f.tp_rank != t) continue;
      read_optimizer_file((fs::path(dir) / f.path).string(), tensors, f, T, [&](const OptimizerPiece& p) {
        const size_t n = p.end - p.begin;
        std::memcpy(sm.data() + loff[p.tensor] + p.begin, p.exp_avg, n * sizeof(float));
        std::memcpy(sv.data() + loff[p.tensor] + p.begin, p.exp_avg_sq, n * sizeof(float));
        covered[p.tensor] += n;
      });
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      CHORUS_CHECK(
          covered[i] == tensors[i].local_numel(T),
          "checkpoint '%s': the optimizer files of TP rank %d hold %zu of the %zu elements of tensor '%s' "
          "(missing or overlapping slices)",
          dir.c_str(), t, covered[i], tensors[i].local_numel(T), tensors[i].name.c_str());
      if (tensors[i].tp_axis < 0 && t > 0) continue;
      nn::place_shard(tensors[i].spec(), t, T, sm.data() + loff[i], g.exp_avg.data() + g.offsets[i]);
      nn::place_shard(tensors[i].spec(), t, T, sv.data() + loff[i], g.exp_avg_sq.data() + g.offsets[i]);
    }
  }
  return g;
}

void cut_rank(const std::vector<TensorInfo>& tensors, const GlobalState& g, int tp, int tp_rank,
              FlatRange opt_range, std::span<float> params, std::span<float> exp_avg,
              std::span<float> exp_avg_sq) {
  size_t n_local = 0;
  const auto loff = local_offsets(tensors, tp, &n_local);
  CHORUS_CHECK(params.size() == n_local, "checkpoint: a TP-%d shard has %zu floats, the buffer %zu", tp,
               n_local, params.size());
  for (size_t i = 0; i < tensors.size(); ++i)
    nn::slice_shard(tensors[i].spec(), tp_rank, tp, g.params.data() + g.offsets[i], params.data() + loff[i]);
  if (exp_avg.empty() && exp_avg_sq.empty()) return;
  CHORUS_CHECK(!g.exp_avg.empty(), "checkpoint: optimizer state was not read");
  CHORUS_CHECK(
      opt_range.end <= n_local && exp_avg.size() == opt_range.size() && exp_avg_sq.size() == opt_range.size(),
      "checkpoint: optimizer range [%zu, %zu) does not fit a shard of %zu floats", opt_range.begin,
      opt_range.end, n_local);
  std::vector<float> scratch(tensors.empty() ? 0 : n_local);
  const std::vector<float>* src[2] = {&g.exp_avg, &g.exp_avg_sq};
  std::span<float> dst[2] = {exp_avg, exp_avg_sq};
  for (int k = 0; k < 2; ++k) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      const size_t n = tensors[i].local_numel(tp);
      if (loff[i] + n <= opt_range.begin || loff[i] >= opt_range.end) continue;
      nn::slice_shard(tensors[i].spec(), tp_rank, tp, src[k]->data() + g.offsets[i],
                      scratch.data() + loff[i]);
    }
    std::memcpy(dst[k].data(), scratch.data() + opt_range.begin, opt_range.size() * sizeof(float));
  }
}

}  // namespace chorus::checkpoint
