#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <future>
#include <sstream>

#include "checkpoint/durable.h"
#include "checkpoint/shard_file.h"
#include "checkpoint/state.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"

namespace chorus::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void broadcast_string(dist::Communicator& c, std::string& s, int root) {
  uint64_t len = s.size();
  c.broadcast(&len, 1, dist::DType::u64, root);
  std::vector<uint64_t> words((len + 7) / 8, 0);
  if (c.rank() == root && len > 0) std::memcpy(words.data(), s.data(), len);
  if (!words.empty()) c.broadcast(words.data(), words.size(), dist::DType::u64, root);
  s.assign(reinterpret_cast<const char*>(words.data()), len);
}

std::vector<std::string> all_gather_strings(dist::Communicator& c, const std::string& s) {
  const int n = c.size(), r = c.rank();
  std::vector<uint64_t> lens(static_cast<size_t>(n), 0);
  uint64_t len = s.size();
  c.all_gather(&len, lens.data(), static_cast<size_t>(n), dist::DType::u64);
  const uint64_t w = (*std::max_element(lens.begin(), lens.end()) + 7) / 8;
  std::vector<std::string> out(static_cast<size_t>(n));
  if (w == 0) return out;
  std::vector<uint64_t> mine(w, 0), all(w * static_cast<size_t>(n), 0);
  std::memcpy(mine.data(), s.data(), s.size());
  c.all_gather(mine.data(), all.data(), all.size(), dist::DType::u64);
  for (int i = 0; i < n; ++i)
    out[static_cast<size_t>(i)].assign(reinterpret_cast<const char*>(all.data() + static_cast<size_t>(i) * w),
                                       lens[static_cast<size_t>(i)]);
  (void)r;
  return out;
}

std::string hex16(uint64_t v) { return strfmt("%016llx", static_cast<unsigned long long>(v)); }

json record_json(const FileRecord& f) {
  return {{"path", f.path},
          {"kind", f.kind},
          {"tp_rank", f.tp_rank},
          {"dp_rank", f.dp_rank},
          {"flat_begin", f.flat_begin},
          {"flat_end", f.flat_end},
          {"flat_numel", f.flat_numel},
          {"bytes", f.bytes},
          {"sha256", f.sha256}};
}

FileRecord record_from(const json& j) {
  FileRecord f;
  f.path = j.at("path").get<std::string>();
  f.kind = j.at("kind").get<std::string>();
  f.tp_rank = j.at("tp_rank").get<int>();
  f.dp_rank = j.at("dp_rank").get<int>();
  f.flat_begin = j.at("flat_begin").get<uint64_t>();
  f.flat_end = j.at("flat_end").get<uint64_t>();
  f.flat_numel = j.at("flat_numel").get<uint64_t>();
  f.bytes = j.at("bytes").get<uint64_t>();
  f.sha256 = j.at("sha256").get<std::string>();
  return f;
}

// Points <save_dir>/latest at `name`: a new symlink renamed over the old one.
void update_latest(const fs::path& save_dir, const std::string& name) {
  const fs::path latest = save_dir / "latest", tmp = save_dir / "latest.tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(name, tmp, ec);
  CHORUS_CHECK(!ec, "checkpoint: cannot create the symlink '%s': %s", tmp.c_str(), ec.message().c_str());
  fs::rename(tmp, latest, ec);
  CHORUS_CHECK(!ec, "checkpoint: cannot rename '%s' to '%s': %s", tmp.c_str(), latest.c_str(),
               ec.message().c_str());
  fsync_path(save_dir.string());
}

// Deletes all but the newest keep_last - 1 committed checkpoints older than
// `step` (the one just committed is the keep_last-th). Each is first renamed
// to <name>.deleting, so a crash mid-delete never leaves a half checkpoint
// under a committed name.
void prune(const fs::path& save_dir, int64_t step, int keep_last) {
  if (keep_last <= 0) return;
  std::vector<std::pair<int64_t, fs::path>> older;
  for (const auto& e : fs::directory_iterator(save_dir)) {
    const int64_t s = parse_step_dir_name(e.path().filename().string());
    if (s >= 0 && s < step && e.is_directory() && !e.is_symlink()) older.push_back({s, e.path()});
  }
  std::sort(older.begin(), older.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = static_cast<size_t>(keep_last - 1); i < older.size(); ++i) {
    const fs::path doomed = older[i].second.string() + ".deleting";
    std::error_code ec;
    fs::rename(older[i].second, doomed, ec);
    if (ec) {
      log_warn("checkpoint: cannot remove old checkpoint '%s': %s", older[i].second.c_str(),
               ec.message().c_str());
      continue;
    }
    fs::remove_all(doomed, ec);
    log_info("checkpoint: removed %s (keep-last %d)", older[i].second.filename().c_str(), keep_last);
  }
}

// Removes what interrupted saves, replacements and deletions left behind
// (step-N.tmp/, step-N.replaced/, step-N.deleting/): never a committed checkpoint.
void remove_leftovers(const fs::path& save_dir) {
  for (const auto& e : fs::directory_iterator(save_dir)) {
    const std::string name = e.path().filename().string();
    for (const char* suffix : {".tmp", ".replaced", ".deleting"}) {
      const size_t n = std::strlen(suffix);
      if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0 &&
          parse_step_dir_name(name.substr(0, name.size() - n)) >= 0 && e.is_directory() && !e.is_symlink()) {
        std::error_code ec;
        fs::remove_all(e.path(), ec);
      }
    }
  }
}

}  // namespace

void RankState::validate(int tp) const {
  CHORUS_CHECK(offsets.size() == tensors.size(), "checkpoint: %zu offsets for %zu tensors", offsets.size(),
               tensors.size());
  size_t off = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    CHORUS_CHECK(
        offsets[i] == off,
        "checkpoint: tensor '%s' starts at offset %zu of the parameter buffer, expected %zu (tensors must be "
        "packed in table order)",
        tensors[i].name.c_str(), offsets[i], off);
    off += tensors[i].local_numel(tp);
  }
  CHORUS_CHECK(params.size() == off, "checkpoint: the parameter buffer has %zu floats, the tensors %zu",
               params.size(), off);
  CHORUS_CHECK(opt_range.begin <= opt_range.end && opt_range.end <= off &&
                   exp_avg.size() == opt_range.size() && exp_avg_sq.size() == opt_range.size(),
               "checkpoint: optimizer state of %zu / %zu floats for the range [%zu, %zu) of %zu",
               exp_avg.size(), exp_avg_sq.size(), opt_range.begin, opt_range.end, off);
}

std::string RankState::first_nonfinite() const {
  // Each buffer with the part [begin, end) of the flat parameter range it holds.
  const struct {
    const char* what;
    const float* data;
    size_t begin, end;
  } bufs[] = {{"parameters", params.data(), 0, params.size()},
              {"exp_avg", exp_avg.data(), opt_range.begin, opt_range.end},
              {"exp_avg_sq", exp_avg_sq.data(), opt_range.begin, opt_range.end}};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const size_t b = offsets[i], e = i + 1 < tensors.size() ? offsets[i + 1] : params.size();
    for (const auto& buf : bufs) {
      const size_t lo = std::max(b, buf.begin), hi = std::min(e, buf.end);
      if (lo >= hi) continue;
      const float* p = buf.data + (lo - buf.begin);
      const size_t at = checkpoint::first_nonfinite(p, hi - lo);
      if (at < hi - lo)
        return strfmt("tensor '%s' holds %g in its %s at element %zu of this rank's shard", tensors[i].name.c_str(),
                      static_cast<double>(p[at]), buf.what, lo - b + at);
    }
  }
  return "";
}

void agree_on_failure(dist::Communicator& world, const std::string& error, bool corrupt) {
  const int n = world.size(), r = world.rank();
  if (n == 1) {
    if (error.empty()) return;
    if (corrupt) throw CorruptCheckpoint(error);
    throw Error(error);
  }
  // 0: fine; else severity * n + (n - 1 - rank): the worst severity wins, then the lowest rank.
  double key = error.empty() ? 0.0 : (corrupt ? 1.0 : 2.0) * n + (n - 1 - r);
  key = world.all_reduce_scalar(key, dist::ReduceOp::max);
  if (key == 0.0) return;
  const int k = static_cast<int>(key);
  const int severity = k / n, root = n - 1 - k % n;
  std::string msg = error;
  broadcast_string(world, msg, root);
  if (root != r) msg = strfmt("(found by rank %d) %s", root, msg.c_str());
  if (severity == 1) throw CorruptCheckpoint(msg);
  throw Error(msg);
}

SaveResult save_checkpoint(dist::ParallelGrid& grid, const std::string& save_dir, Manifest meta,
                           const RankState& st, int keep_last) {
  Timer timer;
  auto& world = grid.world();
  const bool root = world.rank() == 0;
  const int t = grid.tp_rank(), d = grid.dp_rank();
  meta.layout.tp = grid.tp_size();
  meta.layout.dp = grid.dp_size();
  const Layout layout = meta.layout;
  meta.tensors = st.tensors;
  meta.created = utc_now();
  const std::string name = step_dir_name(meta.step);
  const fs::path dir = fs::path(save_dir), final_dir = dir / name, tmp_dir = dir / (name + ".tmp");

  std::string err;
  try {
    layout.validate("checkpoint");
    st.validate(layout.tp);
    // Never commit a diverged state: it would become `latest` and keep_last
    // would then delete the good checkpoints.
    const std::string bad = st.first_nonfinite();
    if (!bad.empty())
      err = strfmt("checkpoint: refusing to save step %lld: %s on world rank %d (TP rank %d, DP rank %d); nothing "
                   "was written and the existing checkpoints in '%s' are kept",
                   static_cast<long long>(meta.step), bad.c_str(), world.rank(), t, d, dir.c_str());
  } catch (const std::exception& e) {
    err = strfmt("checkpoint: cannot start saving '%s': %s", tmp_dir.c_str(), e.what());
  }
  agree_on_failure(world, err, false);
  try {
    if (root) {
      fs::create_directories(dir);
      remove_leftovers(dir);
      fs::create_directory(tmp_dir);
    }
  } catch (const std::exception& e) {
    err = strfmt("checkpoint: cannot start saving '%s': %s", tmp_dir.c_str(), e.what());
  }
  agree_on_failure(world, err, false);

  // Each rank writes its own files; hashing one overlaps writing the next (the
  // larger optimizer file first, so that its hash overlaps the model file's write).
  json mine = {{"world_rank", world.rank()},
               {"dp_rank", d},
               {"tp_rank", t},
               {"rng", {hex16(st.rng[0]), hex16(st.rng[1]), hex16(st.rng[2]), hex16(st.rng[3])}},
               {"files", json::array()}};
  try {
    std::vector<std::pair<FileRecord, std::future<FileDigest>>> pending;
    auto finish = [](std::string p) {
      return std::async(std::launch::async, [p] {
        fsync_path(p);
        return digest_file(p);
      });
    };
    if (stores_optimizer_file(layout, d)) {
      FileRecord r;
      r.path = optimizer_file_name(t, d);
      r.kind = "optimizer";
      r.tp_rank = t;
      r.dp_rank = d;
      r.flat_begin = st.opt_range.begin;
      r.flat_end = st.opt_range.end;
      r.flat_numel = st.params.size();
      const std::string p = (tmp_dir / r.path).string();
      write_optimizer_file(p, st.tensors, st.offsets, st.params.size(), st.opt_range, st.exp_avg.data(),
                           st.exp_avg_sq.data(), layout, t, d, meta.step);
      pending.emplace_back(r, finish(p));
    }
    if (d == 0) {
      FileRecord r;
      r.path = model_file_name(t);
      r.kind = "model";
      r.tp_rank = t;
      const std::string p = (tmp_dir / r.path).string();
      write_model_file(p, st.tensors, st.offsets, st.params.data(), t, layout.tp, meta.step);
      pending.emplace_back(r, finish(p));
    }
    for (auto& [r, fut] : pending) {
      const FileDigest dg = fut.get();
      r.bytes = dg.bytes;
      r.sha256 = dg.sha256;
      mine["files"].push_back(record_json(r));
      commit_event(meta.step, r.path.c_str());
    }
  } catch (const std::exception& e) {
    err = e.what();
  }
  agree_on_failure(world, err, false);

  // Every rank learns every record (sizes for the log); rank 0 commits.
  SaveResult res;
  res.path = final_dir.string();
  for (const auto& s : all_gather_strings(world, mine.dump())) {
    const json j = json::parse(s);
    for (const auto& f : j.at("files")) meta.files.push_back(record_from(f));
    RankRng rr;
    rr.world_rank = j.at("world_rank").get<int>();
    rr.dp_rank = j.at("dp_rank").get<int>();
    rr.tp_rank = j.at("tp_rank").get<int>();
    for (size_t w = 0; w < 4; ++w) rr.state[w] = std::stoull(j.at("rng")[w].get<std::string>(), nullptr, 16);
    meta.rng.push_back(rr);
  }
  sort_files(meta.files);
  res.n_files = static_cast<int>(meta.files.size());
  res.bytes = meta.total_bytes();
  if (root) {
    try {
      check_complete(meta, tmp_dir.string());
      const std::string manifest = (tmp_dir / "manifest.json").string();
      manifest_from_json(manifest_to_json(meta), manifest);  // never commit a manifest a reader would refuse
      write_manifest(manifest, meta);
      res.bytes += fs::file_size(manifest);
      commit_event(meta.step, "manifest.json");
      fsync_path(tmp_dir.string());
      // A checkpoint of the same step from an abandoned run is replaced.
      fs::path replaced;
      if (fs::exists(final_dir)) {
        replaced = dir / (name + ".replaced");
        fs::remove_all(replaced);
        fs::rename(final_dir, replaced);
      }
      fs::rename(tmp_dir, final_dir);
      fsync_path(dir.string());
      commit_event(meta.step, "rename");
      if (!replaced.empty()) fs::remove_all(replaced);
      update_latest(dir, name);
      commit_event(meta.step, "latest");
      prune(dir, meta.step, keep_last);
    } catch (const std::exception& e) {
      err = strfmt("checkpoint: committing '%s' failed: %s", final_dir.c_str(), e.what());
    }
  }
  agree_on_failure(world, err, false);
  res.seconds = timer.seconds();
  return res;
}

LoadResult load_checkpoint(dist::ParallelGrid& grid, const std::string& dir, int zero,
                           const models::GptConfig& config, const std::string& tokenizer_hash,
                           RankState& st) {
  Timer timer;
  auto& world = grid.world();
  LoadResult res;
  res.path = dir;
  std::string err;
  bool corrupt = false;
  double my_bytes = 0;
  try {
    const Layout target{grid.tp_size(), grid.dp_size(), zero};
    st.validate(target.tp);
    const std::string manifest_path = (fs::path(dir) / "manifest.json").string();
    res.manifest = read_manifest(manifest_path);
    const Manifest& m = res.manifest;
    check_complete(m, manifest_path);
    check_matches_run(m, dir, config, tokenizer_hash, st.model_type, st.model_extra);
    check_tensors_match(m, dir, st.tensors);
    res.resharded = !(m.layout == target);
    const int t = grid.tp_rank();
    if (m.layout.tp == target.tp) {
      // Same TP split: this TP rank's model file and the optimizer slices overlapping ours.
      std::vector<const FileRecord*> need;
      for (const auto& f : m.files) {
        if (f.tp_rank != t) continue;
        if (f.kind == "model" || (f.flat_begin < st.opt_range.end && st.opt_range.begin < f.flat_end))
          need.push_back(&f);
      }
      verify_files(dir, need);
      size_t copied = 0;
      for (const FileRecord* f : need) {
        const std::string path = (fs::path(dir) / f->path).string();
        my_bytes += static_cast<double>(f->bytes);
        if (f->kind == "model") {
          read_model_file(path, st.tensors, t, target.tp,
                          [&](size_t i) { return st.params.data() + st.offsets[i]; });
          continue;
        }
        read_optimizer_file(path, st.tensors, *f, target.tp, [&](const OptimizerPiece& p) {
          const size_t b = std::max(st.offsets[p.tensor] + p.begin, st.opt_range.begin);
          const size_t e = std::min(st.offsets[p.tensor] + p.end, st.opt_range.end);
          if (b >= e) return;
          const size_t src = b - (st.offsets[p.tensor] + p.begin), dst = b - st.opt_range.begin;
          std::memcpy(st.exp_avg.data() + dst, p.exp_avg + src, (e - b) * sizeof(float));
          std::memcpy(st.exp_avg_sq.data() + dst, p.exp_avg_sq + src, (e - b) * sizeof(float));
          copied += e - b;
        });
      }
      CHORUS_CHECK(
          copied == st.opt_range.size(),
          "checkpoint '%s': the optimizer files of TP rank %d cover %zu of the %zu elements [%zu, %zu) this "
          "rank needs",
          dir.c_str(), t, copied, st.opt_range.size(), st.opt_range.begin, st.opt_range.end);
    } else {
      // Another TP split: rebuild the global tensors and cut this rank's shard.
      GlobalState g = read_global(dir, m, true);
      my_bytes = static_cast<double>(m.total_bytes());
      cut_rank(st.tensors, g, target.tp, t, st.opt_range, st.params, st.exp_avg, st.exp_avg_sq);
    }
    // Saved by a build that committed diverged state: as damaged (resume auto
    // falls back to an older checkpoint), never trained on silently.
    const std::string bad = st.first_nonfinite();
    if (!bad.empty())
      throw CorruptCheckpoint(strfmt("checkpoint '%s': %s (NaN and Inf are never valid: the run that saved it had "
                                     "diverged)",
                                     dir.c_str(), bad.c_str()));
  } catch (const CorruptCheckpoint& e) {
    err = e.what();
    corrupt = true;
  } catch (const std::exception& e) {
    err = e.what();
  }
  agree_on_failure(world, err, corrupt);

  const Manifest& m = res.manifest;
  const RankRng* r = m.layout.world() == world.size() ? m.rng_of(world.rank()) : nullptr;
  const double all_have = world.all_reduce_scalar(r ? 1.0 : 0.0, dist::ReduceOp::min);
  if (all_have > 0) {
    st.rng = r->state;
    res.rng_restored = true;
  }
  res.bytes = static_cast<uint64_t>(world.all_reduce_scalar(my_bytes, dist::ReduceOp::sum));
  res.seconds = world.all_reduce_scalar(timer.seconds(), dist::ReduceOp::max);
  return res;
}

std::string resolve_checkpoint_dir(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::exists(p / "manifest.json", ec)) return p.string();
  const fs::path latest = p / "latest";
  if (fs::is_symlink(latest, ec)) {
    const fs::path target = fs::read_symlink(latest, ec);
    CHORUS_CHECK(!ec, "checkpoint: cannot read the symlink '%s': %s", latest.c_str(), ec.message().c_str());
    return (target.is_absolute() ? target : p / target).string();
  }
  if (fs::is_directory(latest, ec)) return latest.string();
  if (fs::is_regular_file(latest, ec)) {
    std::string name = read_small_file(latest.string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    return (p / name).string();
  }
  CHORUS_CHECK(fs::exists(p, ec), "checkpoint: '%s' does not exist", path.c_str());
  CHORUS_FAIL(
      "checkpoint: '%s' is neither a checkpoint (no manifest.json) nor a save directory with a 'latest' "
      "entry",
      path.c_str());
}

std::vector<std::string> resume_candidates(const std::string& save_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(save_dir, ec)) return out;
  int64_t latest_step = INT64_MAX;
  const fs::path latest = fs::path(save_dir) / "latest";
  if (fs::exists(latest, ec) || fs::is_symlink(latest, ec)) {
    try {
      const std::string dir = resolve_checkpoint_dir(save_dir);
      out.push_back(dir);
      const int64_t s = parse_step_dir_name(fs::path(dir).filename().string());
      latest_step = s >= 0 ? s : INT64_MAX;
    } catch (const Error& e) {
      log_warn("checkpoint: ignoring '%s': %s", latest.c_str(), e.what());
    }
  }
  std::vector<std::pair<int64_t, std::string>> steps;
  for (const auto& e : fs::directory_iterator(save_dir)) {
    const int64_t s = parse_step_dir_name(e.path().filename().string());
    if (s >= 0 && s < latest_step && e.is_directory()) steps.push_back({s, e.path().string()});
  }
  std::sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto& [s, p] : steps) out.push_back(p);
  return out;
}

std::optional<LoadResult> resume_checkpoint(dist::ParallelGrid& grid, const std::string& resume,
                                            const std::string& save_dir, int zero,
                                            const models::GptConfig& config,
                                            const std::string& tokenizer_hash, RankState& st) {
  auto& world = grid.world();
  const bool root = world.rank() == 0;
  if (resume == "auto") {
    std::string joined, err;
    if (root) {
      try {
        for (const auto& c : resume_candidates(save_dir)) joined += c + "\n";
      } catch (const std::exception& e) {
        err = strfmt("resume auto: cannot list '%s': %s", save_dir.c_str(), e.what());
      }
    }
    agree_on_failure(world, err, false);
    broadcast_string(world, joined, 0);
    std::vector<std::string> candidates, skipped;
    std::istringstream in(joined);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) candidates.push_back(line);
    if (candidates.empty()) return std::nullopt;
    for (const auto& c : candidates) {
      try {
        return load_checkpoint(grid, c, zero, config, tokenizer_hash, st);
      } catch (const CorruptCheckpoint& e) {
        if (root) log_warn("resume auto: skipping checkpoint '%s': %s", c.c_str(), e.what());
        skipped.push_back(e.what());
      }
    }
    std::string all;
    for (const auto& s : skipped) all += "\n  " + s;
    CHORUS_FAIL(
        "resume auto: none of the %zu checkpoints in '%s' is valid (refusing to start from scratch over "
        "them; move them away to start fresh):%s",
        candidates.size(), save_dir.c_str(), all.c_str());
  }
  std::string dir, err;
  if (root) {
    try {
      dir = resolve_checkpoint_dir(resume);
    } catch (const std::exception& e) {
      err = strfmt("resume: %s", e.what());
    }
  }
  agree_on_failure(world, err, false);
  broadcast_string(world, dir, 0);
  return load_checkpoint(grid, dir, zero, config, tokenizer_hash, st);
}

}  // namespace chorus::checkpoint
