// The collective watchdog: a rank that has waited in one collective for longer
// than a time-out names the collective and the rank(s) it is stuck on, and ends
// the job (docs/RELIABILITY.md, "Hung ranks"), instead of hanging until the
// allocation runs out.
//
// A rank inside an all-reduce cannot see who has not arrived, so every rank
// publishes a heartbeat that the others can read: the file <dir>/rank-N (one
// JSON line, written to rank-N.tmp and renamed, so a reader never sees half of
// one) holding its host, pid, wall-clock time, step and phase, and whether it
// is inside a collective (which one, for how long). A watchdog thread per rank
// rewrites it every interval, and, while its rank has waited in one collective
// for longer than the time-out, reads every rank's heartbeat and judges
// (judge() below):
//   - a rank whose heartbeat is older than the stale limit (frozen: SIGSTOP, a
//     node that stopped answering, swapped out), that has none, or that has
//     left the watched part of the job is a suspect: report and end the job;
//   - otherwise, when some rank is alive and outside collectives (writing a
//     checkpoint, evaluating, reading data), the job is still working: keep
//     waiting (warning once);
//   - otherwise every rank is inside a collective (a dead link, an MPI hang,
//     or ranks in different collectives): report each rank's collective and
//     end the job.
// The time-out counts time spent waiting inside one collective only; work
// between collectives, however long, never fires it on the rank that does it.
// Ending the job: one line on stderr per rank that can, then
// MPI_Abort(kExitWatchdog) from the watchdog thread.
//
// Heartbeats live in a directory every rank can read: the run directory, which
// on a cluster is on a shared file system. Stale ages compare wall clocks of
// different nodes, so their skew must stay well under the stale limit (NTP
// keeps it in milliseconds).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "dist/grid.h"

namespace chorus::dist {

// Exit code of a job ended by the watchdog (the first code after sysexits.h's
// 64..78; distinct from 1 = error and 75 = pre-empted).
inline constexpr int kExitWatchdog = 79;

// One rank's published state.
struct Heartbeat {
  int rank = -1;
  std::string host;
  long pid = 0;
  double time = 0.0;       // wall clock when written (seconds since the epoch)
  int64_t step = 0;        // the step being computed (1-based; 0 = before the first)
  std::string phase;       // "start-up", "step", "evaluation", "checkpoint", ...
  std::string state;       // "in" a collective, "out" of collectives, or "stopped" (left the watched part)
  std::string collective;  // the collective it is in, else the last one ("" = none yet)
  double since = 0.0;      // seconds in `state` when written
  uint64_t calls = 0;      // collectives entered since the watchdog started

  std::string to_json() const;
  // nullopt when text is not a heartbeat (torn, empty, another format).
  static std::optional<Heartbeat> parse(const std::string& text);
  // "rank 1 (host h, pid 42)"
  std::string who() const;
  // "step 4" / "the checkpoint of step 6" / "start-up"
  std::string where() const;
};

struct Verdict {
  bool hang = false;            // end the job
  std::vector<int> suspects;    // the ranks named as stuck (empty: every rank is in a collective)
  std::string detail;           // what the report says about the other ranks
};

// Judges a wait that has exceeded the time-out. beats[r] is rank r's last
// heartbeat (nullopt: none); beats[me] is this rank's (inside a collective);
// now: wall clock; stale_s: heartbeat age beyond which a rank counts as frozen.
Verdict judge(const std::vector<std::optional<Heartbeat>>& beats, int me, double now, double stale_s);

struct WatchdogOptions {
  double timeout_s = 600.0;  // seconds in one collective before judging (0: off)
  std::string dir;           // heartbeat directory shared by all ranks (created)
  double interval_s = 0.0;   // heartbeat and check period (0: timeout / 20 within [0.1, 5] s)
  // Called once per hung collective with the report line. Default: print it
  // on stderr and end the job (MPI_Abort; _exit if that has not returned in 10 s).
  std::function<void(const std::string& report)> on_hang;
};

class Watchdog final : public CollectiveObserver {
 public:
  // Inert (no thread, no files) when timeout_s is 0 or the world is one rank.
  Watchdog(int world_rank, int world_size, WatchdogOptions o);
  // The watchdog of a training job: heartbeats in <run_dir>/.heartbeat,
  // observing the grid's world, TP and DP groups.
  Watchdog(ParallelGrid& grid, double timeout_s, const std::string& run_dir);
  // Detaches from the groups, stops the thread, publishes "stopped".
  ~Watchdog() override;
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  bool active() const { return active_; }
  double stale_s() const { return stale_s_; }
  // Observes c's collectives until destruction (c must outlive the watchdog).
  void observe(Communicator& c);
  // Where the job is, for heartbeats and reports: step (1-based) in phase "step";
  // set_phase keeps the step ("evaluation", "checkpoint").
  void set_step(int64_t step);
  void set_phase(const char* phase);

  void collective_begin(const Communicator& group, const char* op, size_t n, DType t, const char* reduce) override;
  void collective_end() override;

 private:
  using Clock = std::chrono::steady_clock;
  Heartbeat snapshot() const;  // this rank's heartbeat now
  void run();                  // the thread
  void publish(const Heartbeat& hb);
  void check();

  const int rank_, size_;
  const bool active_;
  WatchdogOptions opt_;
  double interval_s_ = 0.0, stale_s_ = 0.0;
  std::string host_, path_;
  long pid_ = 0;
  std::vector<Communicator*> observed_;
  bool publish_failed_ = false;  // watchdog thread only (and the destructor after join)

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool stop_ = false, stopped_ = false;
  int64_t step_ = 0;
  const char* phase_ = "start-up";
  uint64_t calls_ = 0, calls_in_phase_ = 0;
  int depth_ = 0;                 // nesting of collective_begin
  uint64_t entry_ = 0;            // counts outermost entries: which wait a verdict is about
  uint64_t reported_entry_ = 0;   // the wait already reported as a hang
  uint64_t warned_entry_ = 0;     // the wait already warned about (still working elsewhere)
  std::string collective_;        // the current (or last) collective, described
  Clock::time_point since_ = Clock::now();
  std::thread thread_;
};

}  // namespace chorus::dist
