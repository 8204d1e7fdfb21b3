#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/fsync.h"
#include "core/log.h"
#include "core/process_info.h"
#include "core/version.h"
#include "train/loop.h"

namespace chorus::train {

namespace fs = std::filesystem;

namespace {

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    at += n;
  }
  return out;
}

// "host H, pid P, since T (command: C)" from a lock file's text.
std::string describe_holder(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    return strfmt("host %s, pid %lld, since %s (command: %s)", j.at("host").get<std::string>().c_str(),
                  j.at("pid").get<long long>(), j.at("since").get<std::string>().c_str(),
                  j.at("command").get<std::string>().c_str());
  } catch (const nlohmann::json::exception&) {
    return text.empty() ? std::string("a process that has not recorded itself in the lock file yet")
                        : "a holder the lock file does not describe (it holds '" + text.substr(0, 200) + "')";
  }
}

std::string mb(double bytes) { return strfmt("%.1f MB", bytes / 1e6); }

// The directory itself, or the nearest existing folder above it.
fs::path existing_ancestor(fs::path p) {
  p = fs::absolute(p);
  while (!fs::exists(p) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  return p;
}

// Collective: the error of rank 0 (if any) thrown on every rank.
void agree(dist::Communicator& world, const std::string& err) {
  try {
    checkpoint::agree_on_failure(world, err, false);
  } catch (const Error& e) {
    throw AgreedError(e.what());
  }
}

}  // namespace

DirLock::DirLock(const std::string& dir, const char* flag, dist::Communicator& world) {
  std::string err;
  if (world.rank() == 0) {
    try {
      path_ = (fs::path(dir) / kFileName).string();
      for (fs::path p = fs::absolute(dir); !fs::exists(p) && p != p.parent_path(); p = p.parent_path())
        created_.push_back(p);  // leaf first: removed in this order on release when still empty
      std::error_code ec;
      fs::create_directories(dir, ec);
      CHORUS_CHECK(!ec, "%s: cannot create '%s': %s", flag, dir.c_str(), ec.message().c_str());
      CHORUS_CHECK(fs::is_directory(dir), "%s: '%s' is not a directory", flag, dir.c_str());
      for (int attempt = 0;; ++attempt) {
        fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        CHORUS_CHECK(fd_ >= 0, "%s: cannot create the lock file '%s': %s", flag, path_.c_str(), std::strerror(errno));
        if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
          const int e = errno;
          const std::string holder = read_all(fd_);
          ::close(fd_);
          fd_ = -1;
          if (e == ENOLCK || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP) {
            log_warn("%s: the file system of '%s' does not support flock (%s): a second run on this directory "
                     "would not be detected",
                     flag, dir.c_str(), std::strerror(e));
            return;
          }
          CHORUS_CHECK(e == EWOULDBLOCK, "%s: cannot lock '%s': %s", flag, path_.c_str(), std::strerror(e));
          CHORUS_FAIL("%s: '%s' is in use by another run: %s; wait for it to end or give this run another "
                      "--%s (lock file %s)",
                      flag, dir.c_str(), describe_holder(holder).c_str(), flag, path_.c_str());
        }
        // The holder may have released the lock (removed the file) between our
        // open and flock: then this lock is on a removed file; take the new one.
        struct stat held {}, named {};
        if (::fstat(fd_, &held) == 0 && ::stat(path_.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
            held.st_dev == named.st_dev)
          break;
        ::close(fd_);
        fd_ = -1;
        CHORUS_CHECK(attempt < 100, "%s: the lock file '%s' keeps disappearing", flag, path_.c_str());
      }
      const std::string previous = read_all(fd_);
      if (!previous.empty())
        log_warn("%s: taking over the stale lock of '%s' held by %s: that run ended without releasing it (killed "
                 "or crashed; no process holds the lock any more)",
                 flag, dir.c_str(), describe_holder(previous).c_str());
      const std::string me = nlohmann::json{{"host", host_name()},
                                            {"pid", static_cast<long long>(::getpid())},
                                            {"since", utc_now()},
                                            {"command", command_line()},
                                            {"chorus", version_line()}}
                                 .dump() +
                             "\n";
      CHORUS_CHECK(::ftruncate(fd_, 0) == 0 &&
                       ::pwrite(fd_, me.data(), me.size(), 0) == static_cast<ssize_t>(me.size()) && ::fsync(fd_) == 0,
                   "%s: writing the lock file '%s' failed: %s", flag, path_.c_str(), std::strerror(errno));
    } catch (const Error& e) {
      err = e.what();
      release();  // what was taken so far; the constructor throws below
    }
  }
  agree(world, err);
}

DirLock::~DirLock() { release(); }

void DirLock::release() {
  if (fd_ >= 0) {
    ::unlink(path_.c_str());  // before the unlock: a waiter then sees the file gone (the inode check above)
    ::close(fd_);
    fd_ = -1;
  }
  std::error_code ec;
  for (const auto& p : created_) fs::remove(p, ec);  // only when empty: a run refused before it wrote anything
  created_.clear();
}

RunDirLock::RunDirLock(const TrainOptions& opt) {
  dist::ParallelGrid single = dist::ParallelGrid::single();
  dist::Communicator& world = (opt.grid ? *opt.grid : single).world();
  run_ = std::make_unique<DirLock>(opt.run_dir, "run-dir", world);
  if (!opt.save_dir.empty() &&
      fs::weakly_canonical(fs::absolute(opt.save_dir)) != fs::weakly_canonical(fs::absolute(opt.run_dir)))
    save_ = std::make_unique<DirLock>(opt.save_dir, "save-dir", world);
}

uint64_t checkpoint_bytes_estimate(const std::vector<models::ParamSpec>& table) {
  uint64_t n = 0;
  for (const auto& p : table) {
    uint64_t numel = 1;
    for (int64_t d : p.global_shape) numel *= static_cast<uint64_t>(d);
    n += numel;
  }
  const uint64_t bytes = 3 * sizeof(float) * n;  // masters, exp_avg, exp_avg_sq
  return bytes + bytes / 50 + (1u << 20);
}

std::string save_room_error(const std::string& dir, const char* flag, uint64_t need_bytes) {
  const fs::path at = existing_ancestor(dir);
  if (!fs::is_directory(at)) return strfmt("%s: '%s' is not a directory", flag, at.c_str());
  if (::access(at.c_str(), W_OK) != 0)
    return strfmt("%s: '%s' is not writable: %s", flag, at.c_str(), std::strerror(errno));
  struct statvfs vfs {};
  if (::statvfs(at.c_str(), &vfs) != 0)
    return strfmt("%s: cannot tell the free space of '%s': %s", flag, at.c_str(), std::strerror(errno));
  const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (free_bytes >= need_bytes) return "";
  return strfmt("%s: '%s' has %s free, but one checkpoint of this model needs about %s (fp32 weights and AdamW "
                "moments); free space or give another --%s",
                flag, at.c_str(), mb(static_cast<double>(free_bytes)).c_str(),
                mb(static_cast<double>(need_bytes)).c_str(), flag);
}

void check_save_room(const TrainOptions& opt, const std::string& save_dir,
                     const std::vector<models::ParamSpec>& table, int64_t start_step, dist::Communicator& world) {
  std::string err;
  if (world.rank() == 0) {
    const char* flag = opt.save_dir.empty() ? "run-dir" : "save-dir";
    const uint64_t one = checkpoint_bytes_estimate(table);
    // Checkpoints this invocation writes: every save_every steps and at its end
    // (none when a resumed run is already complete).
    const int64_t end = opt.stop_at > 0 ? std::min(opt.stop_at, opt.steps) : opt.steps;
    int64_t n_saves = 0;
    if (end > start_step) {
      n_saves = 1;
      if (opt.save_every > 0) n_saves = end / opt.save_every - start_step / opt.save_every + (end % opt.save_every != 0);
    }
    if (n_saves > 0) err = save_room_error(save_dir, flag, one);
    const int64_t kept = opt.keep_last > 0 ? std::min<int64_t>(n_saves, opt.keep_last + 1) : n_saves;
    struct statvfs vfs {};
    if (err.empty() && kept > 1 && ::statvfs(existing_ancestor(save_dir).c_str(), &vfs) == 0) {
      const double free_bytes = static_cast<double>(vfs.f_bavail) * vfs.f_frsize;
      if (free_bytes < static_cast<double>(kept) * one)
        log_warn("%s: '%s' has %s free, room for %lld of the %lld checkpoints of about %s this run keeps; a save "
                 "that does not fit stops the run with an error (set --keep-last, or free space)",
                 flag, save_dir.c_str(), mb(free_bytes).c_str(), static_cast<long long>(free_bytes / one),
                 static_cast<long long>(kept), mb(static_cast<double>(one)).c_str());
    }
  }
  agree(world, err);
}

nlohmann::json run_provenance() {
  return {{"chorus", {{"version", version()}, {"git_revision", git_revision()}}},
          {"command_line", command_line()},
          {"host", host_name()},
          {"pid", static_cast<long long>(::getpid())},
          {"started", utc_now()},
          {"slurm", slurm_job()}};
}

nlohmann::json run_config(const TrainTask& task, const TrainOptions& opt, const dist::ParallelGrid& grid,
                          const std::string& resumed_from, int64_t start_step) {
  nlohmann::json cfg = opt.to_json();
  cfg.update(task.config_json());
  cfg["layout"] = {{"world", grid.world_size()}, {"dp", grid.dp_size()}, {"tp", grid.tp_size()},
                   {"zero", opt.zero_stage}};
  cfg["resumed_from"] = resumed_from.empty() ? nlohmann::json(nullptr)
                                             : nlohmann::json{{"checkpoint", resumed_from}, {"step", start_step}};
  cfg.update(run_provenance());
  return cfg;
}

void write_run_config(const std::string& run_dir, const nlohmann::json& config) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  write_file_atomic((fs::path(run_dir) / "config.json").string(), config.dump(2) + "\n");
}

}  // namespace chorus::train
