#include "dist/watchdog.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"

namespace chorus::dist {

namespace fs = std::filesystem;

namespace {

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

// At most this many ranks are described in one report line.
constexpr size_t kMaxNamed = 8;

std::string join_limited(const std::vector<std::string>& parts) {
  std::string out;
  for (size_t i = 0; i < parts.size() && i < kMaxNamed; ++i) out += (i ? "; " : "") + parts[i];
  if (parts.size() > kMaxNamed) out += strfmt("; and %zu more", parts.size() - kMaxNamed);
  return out;
}

// What rank hb was doing when it wrote its last heartbeat.
std::string doing(const Heartbeat& hb) {
  if (hb.state == "in") return strfmt("in %s of %s for %.1f s", hb.collective.c_str(), hb.where().c_str(), hb.since);
  return strfmt("outside collectives for %.1f s at %s", hb.since, hb.where().c_str());
}

// The default on_hang: report, then end every rank of the job.
[[noreturn]] void end_job(const std::string& report) {
  std::fprintf(stderr, "%s\n", report.c_str());
  std::fflush(stderr);
  // MPI_Abort from a thread that is not the main one is outside
  // MPI_THREAD_FUNNELED; Open MPI honours it, but should an MPI library block
  // here, this process still exits and the launcher ends the others.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    _exit(kExitWatchdog);
  }).detach();
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, kExitWatchdog);
  _exit(kExitWatchdog);
}

}  // namespace

std::string Heartbeat::to_json() const {
  return nlohmann::json{{"rank", rank},   {"host", host},   {"pid", pid},     {"time", time},
                        {"step", step},   {"phase", phase}, {"state", state}, {"collective", collective},
                        {"since", since}, {"calls", calls}}
      .dump();
}

std::optional<Heartbeat> Heartbeat::parse(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    Heartbeat hb;
    hb.rank = j.at("rank").get<int>();
    hb.host = j.at("host").get<std::string>();
    hb.pid = j.at("pid").get<long>();
    hb.time = j.at("time").get<double>();
    hb.step = j.at("step").get<int64_t>();
    hb.phase = j.at("phase").get<std::string>();
    hb.state = j.at("state").get<std::string>();
    hb.collective = j.at("collective").get<std::string>();
    hb.since = j.at("since").get<double>();
    hb.calls = j.at("calls").get<uint64_t>();
    return hb;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

std::string Heartbeat::who() const { return strfmt("rank %d (host %s, pid %ld)", rank, host.c_str(), pid); }

std::string Heartbeat::where() const {
  if (step == 0) return phase;
  if (phase == "step") return strfmt("step %lld", static_cast<long long>(step));
  return strfmt("the %s of step %lld", phase.c_str(), static_cast<long long>(step));
}

Verdict judge(const std::vector<std::optional<Heartbeat>>& beats, int me, double now, double stale_s) {
  Verdict v;
  std::vector<std::string> suspects, busy, waiting;
  for (size_t r = 0; r < beats.size(); ++r) {
    if (static_cast<int>(r) == me) continue;
    const auto& hb = beats[r];
    if (!hb) {
      v.suspects.push_back(static_cast<int>(r));
      suspects.push_back(strfmt("rank %zu: no heartbeat (never reached the training loop?)", r));
      continue;
    }
    const double age = now - hb->time;
    if (hb->state == "stopped") {
      v.suspects.push_back(static_cast<int>(r));
      suspects.push_back(strfmt("%s: left the training loop %.1f s ago, after %s", hb->who().c_str(),
                                hb->since + age, hb->where().c_str()));
    } else if (age > stale_s) {
      v.suspects.push_back(static_cast<int>(r));
      suspects.push_back(strfmt("%s: no heartbeat for %.1f s (frozen or gone), last seen %s", hb->who().c_str(), age,
                                doing(*hb).c_str()));
    } else if (hb->state == "in") {
      waiting.push_back(strfmt("rank %d %s", hb->rank, doing(*hb).c_str()));
    } else {
      busy.push_back(strfmt("rank %d %s", hb->rank, doing(*hb).c_str()));
    }
  }
  if (!suspects.empty()) {
    v.hang = true;
    v.detail = "suspected stuck: " + join_limited(suspects);
  } else if (!busy.empty()) {
    v.detail = "alive and working: " + join_limited(busy);
  } else {
    v.hang = true;
    v.detail = "no rank is frozen or outside collectives: every rank waits inside one (a dead network link, an MPI "
               "hang, or ranks in different collectives): " +
               join_limited(waiting);
  }
  return v;
}

Watchdog::Watchdog(int world_rank, int world_size, WatchdogOptions o)
    : rank_(world_rank), size_(world_size), active_(o.timeout_s > 0 && world_size > 1), opt_(std::move(o)) {
  CHORUS_CHECK(opt_.timeout_s >= 0, "watchdog-timeout: must be >= 0 seconds (0 = off), got %g", opt_.timeout_s);
  if (!active_) return;
  interval_s_ = opt_.interval_s > 0 ? opt_.interval_s : std::clamp(opt_.timeout_s / 20, 0.1, 5.0);
  // A live rank rewrites its heartbeat every interval; a frozen one's ages
  // from the moment it froze, which is at least the time-out before anyone judges.
  stale_s_ = std::min(opt_.timeout_s / 2, 4 * interval_s_ + 1.0);
  if (!opt_.on_hang) opt_.on_hang = end_job;
  host_ = host_name();
  pid_ = static_cast<long>(getpid());
  std::error_code ec;
  fs::create_directories(opt_.dir, ec);
  CHORUS_CHECK(!ec && fs::is_directory(opt_.dir), "watchdog: cannot create the heartbeat directory '%s': %s",
               opt_.dir.c_str(), ec.message().c_str());
  path_ = (fs::path(opt_.dir) / strfmt("rank-%d", rank_)).string();
  publish(snapshot());
  thread_ = std::thread([this] { run(); });
}

Watchdog::Watchdog(ParallelGrid& grid, double timeout_s, const std::string& run_dir)
    : Watchdog(grid.world_rank(), grid.world_size(),
               WatchdogOptions{timeout_s, (fs::path(run_dir) / ".heartbeat").string(), 0.0, {}}) {
  observe(grid.world());
  observe(grid.tp());
  observe(grid.dp());
}

Watchdog::~Watchdog() {
  if (!active_) return;
  for (Communicator* c : observed_) c->set_observer(nullptr);
  {
    std::lock_guard lk(mu_);
    stop_ = true;
    stopped_ = true;
    since_ = Clock::now();
  }
  cv_.notify_all();
  thread_.join();
  publish(snapshot());
}

void Watchdog::observe(Communicator& c) {
  if (!active_) return;
  c.set_observer(this);
  observed_.push_back(&c);
}

void Watchdog::set_step(int64_t step) {
  std::lock_guard lk(mu_);
  step_ = step;
  phase_ = "step";
  calls_in_phase_ = 0;
}

void Watchdog::set_phase(const char* phase) {
  std::lock_guard lk(mu_);
  phase_ = phase;
  calls_in_phase_ = 0;
}

void Watchdog::collective_begin(const Communicator& group, const char* op, size_t n, DType t, const char* reduce) {
  std::lock_guard lk(mu_);
  if (depth_++ > 0) return;  // inside one already (a backend composing collectives)
  ++calls_;
  ++calls_in_phase_;
  ++entry_;
  since_ = Clock::now();
  const std::string args = std::string(reduce ? strfmt("%s, ", reduce) : "") +
                           (n ? strfmt("%zu x %s", n, dtype_name(t)) : std::string());
  collective_ = strfmt("%s %s(%s) #%llu", group.name().c_str(), op, args.c_str(),
                       static_cast<unsigned long long>(calls_in_phase_));
}

void Watchdog::collective_end() {
  std::lock_guard lk(mu_);
  if (--depth_ == 0) since_ = Clock::now();
}

Heartbeat Watchdog::snapshot() const {
  std::lock_guard lk(mu_);
  Heartbeat hb;
  hb.rank = rank_;
  hb.host = host_;
  hb.pid = pid_;
  hb.time = wall_now();
  hb.step = step_;
  hb.phase = phase_;
  hb.state = stopped_ ? "stopped" : depth_ > 0 ? "in" : "out";
  hb.collective = collective_;
  hb.since = std::chrono::duration<double>(Clock::now() - since_).count();
  hb.calls = calls_;
  return hb;
}

void Watchdog::publish(const Heartbeat& hb) {
  const std::string tmp = path_ + ".tmp";
  bool ok = false;
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    ok = std::fputs((hb.to_json() + "\n").c_str(), f) >= 0;
    ok = std::fclose(f) == 0 && ok;
    ok = ok && std::rename(tmp.c_str(), path_.c_str()) == 0;
  }
  if (!ok && !publish_failed_)
    log_warn("watchdog: cannot write the heartbeat '%s' (the other ranks will take this rank for frozen)",
             path_.c_str());
  publish_failed_ = !ok;
}

void Watchdog::run() {
  std::unique_lock lk(mu_);
  for (auto last = Clock::now(); !stop_;) {
    lk.unlock();
    publish(snapshot());
    // A thread that did not run for longer than the stale limit was frozen
    // itself (SIGSTOP and SIGCONT, or starved): its waits are not the others'
    // fault, and its peers' heartbeats look old to it; judge next time.
    const double gap = std::chrono::duration<double>(Clock::now() - last).count();
    last = Clock::now();
    if (gap > stale_s_)
      log_warn("watchdog: this rank did not run for %.1f s (stopped, or starved of CPU)", gap);
    else
      check();
    lk.lock();
    cv_.wait_for(lk, std::chrono::duration<double>(interval_s_), [this] { return stop_; });
  }
}

void Watchdog::check() {
  const Heartbeat me = snapshot();
  uint64_t entry = 0;
  {
    std::lock_guard lk(mu_);
    if (depth_ == 0 || me.since < opt_.timeout_s || reported_entry_ == entry_) return;
    entry = entry_;
  }
  std::vector<std::optional<Heartbeat>> beats(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) {
      beats[static_cast<size_t>(r)] = me;
      continue;
    }
    std::ifstream in(fs::path(opt_.dir) / strfmt("rank-%d", r));
    std::stringstream text;
    text << in.rdbuf();
    if (in) beats[static_cast<size_t>(r)] = Heartbeat::parse(text.str());
  }
  const Verdict v = judge(beats, rank_, wall_now(), stale_s_);
  {
    std::lock_guard lk(mu_);
    if (entry != entry_ || depth_ == 0) return;  // the collective completed meanwhile
    if (!v.hang) {
      if (warned_entry_ == entry) return;
      warned_entry_ = entry;
    } else {
      reported_entry_ = entry;
    }
  }
  if (!v.hang) {
    log_warn("watchdog: waited %.0f s in %s of %s, beyond --watchdog-timeout %g, but not a hang: %s; still waiting",
             me.since, me.collective.c_str(), me.where().c_str(), opt_.timeout_s, v.detail.c_str());
    return;
  }
  opt_.on_hang(strfmt("chorus watchdog: %s of %d has waited %.1f s in %s of %s (--watchdog-timeout %g); %s; "
                      "ending the job (exit code %d)",
                      me.who().c_str(), size_, me.since, me.collective.c_str(), me.where().c_str(), opt_.timeout_s,
                      v.detail.c_str(), kExitWatchdog));
}

}  // namespace chorus::dist
