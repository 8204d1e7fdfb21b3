// The collective watchdog (dist/watchdog.h):
//   - judge(): a stale, missing or stopped peer is named as stuck; a peer alive
//     outside collectives means "still working" (no hang); every rank inside a
//     collective is a hang with no rank to blame;
//   - heartbeats round-trip through their JSON line and torn ones are refused;
//   - on the real world group (every rank a watchdog thread, heartbeats in a
//     shared directory, on_hang recorded instead of ending the job): a rank
//     that works outside collectives for longer than the time-out while the
//     others wait in a barrier fires nothing; a rank that left the watched
//     part, or whose heartbeat is stale, is named with the collective;
//   - timeout 0 (or a world of one) is inert: no thread, no file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/watchdog.h"
#include "dist_test_env.h"

using namespace chorus::dist;
using chorus::dist::testing::g_runtime;
namespace fs = std::filesystem;

namespace {

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Heartbeat beat(int rank, const std::string& state, double age, double now) {
  Heartbeat hb;
  hb.rank = rank;
  hb.host = "node" + std::to_string(rank);
  hb.pid = 1000 + rank;
  hb.time = now - age;
  hb.step = 7;
  hb.phase = "step";
  hb.state = state;
  hb.collective = "dp all_reduce(avg, 1 x f64) #3";
  hb.since = 2.0;
  hb.calls = 42;
  return hb;
}

TEST(WatchdogJudge, AStalePeerIsNamed) {
  const double now = wall_now();
  std::vector<std::optional<Heartbeat>> b = {beat(0, "in", 0.1, now), beat(1, "out", 30.0, now),
                                             beat(2, "in", 0.2, now)};
  const Verdict v = judge(b, 0, now, 5.0);
  EXPECT_TRUE(v.hang);
  EXPECT_EQ(v.suspects, std::vector<int>{1});
  EXPECT_NE(v.detail.find("suspected stuck: rank 1 (host node1, pid 1001): no heartbeat for 30.0 s"),
            std::string::npos)
      << v.detail;
  EXPECT_NE(v.detail.find("outside collectives for 2.0 s at step 7"), std::string::npos) << v.detail;
  EXPECT_EQ(v.detail.find("rank 2"), std::string::npos) << "a live waiting rank is not a suspect: " << v.detail;
}

TEST(WatchdogJudge, MissingAndStoppedPeersAreNamed) {
  const double now = wall_now();
  std::vector<std::optional<Heartbeat>> b = {beat(0, "in", 0.1, now), std::nullopt, beat(2, "stopped", 0.1, now)};
  const Verdict v = judge(b, 0, now, 5.0);
  EXPECT_TRUE(v.hang);
  EXPECT_EQ(v.suspects, (std::vector<int>{1, 2}));
  EXPECT_NE(v.detail.find("rank 1: no heartbeat"), std::string::npos) << v.detail;
  EXPECT_NE(v.detail.find("rank 2 (host node2, pid 1002): left the training loop"), std::string::npos) << v.detail;
}

TEST(WatchdogJudge, ALivePeerOutsideCollectivesIsStillWorking) {
  const double now = wall_now();
  std::vector<std::optional<Heartbeat>> b = {beat(0, "in", 0.1, now), beat(1, "out", 0.3, now)};
  b[1]->phase = "checkpoint";
  const Verdict v = judge(b, 0, now, 5.0);
  EXPECT_FALSE(v.hang);
  EXPECT_TRUE(v.suspects.empty());
  EXPECT_NE(v.detail.find("rank 1 outside collectives for 2.0 s at the checkpoint of step 7"), std::string::npos)
      << v.detail;
}

TEST(WatchdogJudge, EveryRankInACollectiveIsAHangWithoutSuspects) {
  const double now = wall_now();
  std::vector<std::optional<Heartbeat>> b = {beat(0, "in", 0.1, now), beat(1, "in", 0.3, now)};
  b[1]->collective = "tp all_reduce(sum, 4096 x f32) #1";
  const Verdict v = judge(b, 0, now, 5.0);
  EXPECT_TRUE(v.hang);
  EXPECT_TRUE(v.suspects.empty());
  EXPECT_NE(v.detail.find("every rank waits inside one"), std::string::npos) << v.detail;
  EXPECT_NE(v.detail.find("rank 1 in tp all_reduce(sum, 4096 x f32) #1 of step 7 for 2.0 s"), std::string::npos) << v.detail;
}

TEST(WatchdogHeartbeat, RoundTripsAndRefusesTornLines) {
  const Heartbeat hb = beat(3, "in", 1.0, 1.7e9);
  const auto back = Heartbeat::parse(hb.to_json());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->to_json(), hb.to_json());
  EXPECT_EQ(back->who(), "rank 3 (host node3, pid 1003)");
  const std::string line = hb.to_json();
  EXPECT_FALSE(Heartbeat::parse(line.substr(0, line.size() / 2)).has_value());
  EXPECT_FALSE(Heartbeat::parse("").has_value());
  EXPECT_FALSE(Heartbeat::parse("{\"rank\": 1}").has_value());
}

TEST(WatchdogInert, OffOrAloneMeansNoThreadAndNoFile) {
  const fs::path dir = fs::temp_directory_path() / ("chorus_wd_inert_" + std::to_string(getpid()));
  {
    Watchdog off(0, 4, {0.0, dir.string(), 0.0, {}});
    Watchdog alone(0, 1, {5.0, dir.string(), 0.0, {}});
    EXPECT_FALSE(off.active());
    EXPECT_FALSE(alone.active());
  }
  EXPECT_FALSE(fs::exists(dir));
}

// Every rank of the world runs a watchdog on the world group, heartbeats in
// one directory; on_hang only records. Rank 1 behaves as `peer` says while
// the others wait for it in a barrier.
class WatchdogWorld : public ::testing::Test {
 protected:
  // Margins for a loaded CI machine (ranks oversubscribed on 2 cores, MPI
  // waiting ranks spinning): a heartbeat is stale only after
  // min(timeout / 2, 4 x interval + 1) = 3 s without a rewrite.
  static constexpr double kTimeout = 6.0, kInterval = 0.5, kPeerSeconds = 9.0;

  void SetUp() override {
    if (g_runtime->world().size() < 2) GTEST_SKIP() << "needs two or more ranks";
    uint64_t id = static_cast<uint64_t>(getpid());
    g_runtime->world().broadcast(&id, 1, DType::u64, 0);
    dir_ = fs::temp_directory_path() /
           ("chorus_wd_" + std::to_string(id) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override {
    if (g_runtime->world().size() < 2) return;
    g_runtime->world().barrier();
    if (g_runtime->world().rank() == 0) fs::remove_all(dir_);
  }

  std::unique_ptr<Watchdog> start() {
    WatchdogOptions o{kTimeout, dir_.string(), kInterval, [this](const std::string& report) {
                        std::lock_guard lk(mu_);
                        reports_.push_back(report);
                      }};
    auto w = std::make_unique<Watchdog>(g_runtime->world().rank(), g_runtime->world().size(), o);
    w->observe(g_runtime->world());
    w->set_step(5);
    return w;
  }
  // Rank 1 runs peer() (kPeerSeconds long), then every rank meets in a barrier
  // and the watchdogs are stopped; returns this rank's reports.
  template <class Peer>
  std::vector<std::string> run(Peer peer) {
    auto w = start();
    g_runtime->world().barrier();  // every heartbeat is written
    if (g_runtime->world().rank() == 1) peer(w);
    g_runtime->world().barrier();  // the others wait here for rank 1
    w.reset();
    std::lock_guard lk(mu_);
    return reports_;
  }

  fs::path dir_;
  std::mutex mu_;
  std::vector<std::string> reports_;
};

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

TEST_F(WatchdogWorld, APeerWorkingOutsideCollectivesFiresNothing) {
  const auto reports = run([](std::unique_ptr<Watchdog>&) { sleep_s(kPeerSeconds); });
  EXPECT_TRUE(reports.empty()) << reports.front();
}

TEST_F(WatchdogWorld, APeerThatLeftIsNamedWithTheCollective) {
  const auto reports = run([](std::unique_ptr<Watchdog>& w) {
    w.reset();  // publishes "stopped"
    sleep_s(kPeerSeconds);
  });
  if (g_runtime->world().rank() == 1) return;
  ASSERT_EQ(reports.size(), 1u);
  const std::string& r = reports[0];
  EXPECT_NE(r.find("chorus watchdog: rank " + std::to_string(g_runtime->world().rank()) + " (host "),
            std::string::npos) << r;
  EXPECT_NE(r.find("in world barrier() #2 of step 5 (--watchdog-timeout 6)"), std::string::npos) << r;
  EXPECT_NE(r.find("suspected stuck: rank 1 (host "), std::string::npos) << r;
  EXPECT_NE(r.find("left the training loop"), std::string::npos) << r;
  EXPECT_NE(r.find("(exit code 79)"), std::string::npos) << r;
}

TEST_F(WatchdogWorld, AStaleHeartbeatIsNamedAsFrozen) {
  const auto reports = run([this](std::unique_ptr<Watchdog>& w) {
    w.reset();
    // What a frozen rank leaves behind: its last heartbeat, aging.
    Heartbeat hb = Heartbeat::parse([&] {
                     std::ifstream in(dir_ / "rank-1");
                     std::string s;
                     std::getline(in, s);
                     return s;
                   }())
                       .value();
    hb.state = "in";
    hb.collective = "tp all_reduce(sum, 64 x f32) #9";
    hb.time = wall_now() - 1.0;
    std::ofstream(dir_ / "rank-1") << hb.to_json() << "\n";
    sleep_s(kPeerSeconds);
  });
  if (g_runtime->world().rank() == 1) return;
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].find("suspected stuck: rank 1 (host "), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("no heartbeat for "), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("last seen in tp all_reduce(sum, 64 x f32) #9 of step 5"), std::string::npos) << reports[0];
}

}  // namespace
