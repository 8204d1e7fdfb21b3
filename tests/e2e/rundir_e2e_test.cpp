// The run directory through the chorus executable (docs/RELIABILITY.md):
//   - a second run on a run directory in use is refused naming the holder
//     (host, pid, since when), on one rank and on two (every rank exits, rc 1),
//     also for finetune-speech; a run killed by SIGKILL leaves a stale lock
//     that the next run names in a warning and takes over;
//   - a refused run (another model size or tokenizer on resume, a run
//     directory in use) leaves config.json and metrics.jsonl byte-identical,
//     and a refused run into a new directory leaves no directory behind;
//   - a save directory without room for a checkpoint (a 1 MiB tmpfs) is
//     refused before anything is written;
//   - a full disk under metrics.jsonl or stdout fails the run, naming it;
//   - config.json records the build, the command line, the Slurm job, the
//     layout and every option, floats as given (0.9, not 0.8999999761581421);
//   - `chorus --version`, and the git revision "unknown" outside a checkout.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/process.h"

namespace fs = std::filesystem;

namespace {

using chorus::testing::mpirun;
using chorus::testing::Result;
using chorus::testing::sh;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class RunDir : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("chorus_rundir_e2e_" + std::to_string(getpid()));
    ASSERT_EQ(chorus::testing::make_corpus(dir_, {"en"}, 512), "");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  static std::string pretrain_cmd(const std::string& run_dir, const std::string& args,
                                  const std::string& tok = "tok.json") {
    return std::string(CHORUS_BINARY) + " pretrain --quiet --config " + CHORUS_SOURCE_DIR +
           "/configs/gpt-tiny.ini --tokenizer " + path(tok) + " --data " + path("shards") + " --run-dir " + run_dir +
           (has(args, "--steps") ? "" : " --steps 3") + " --warmup 1 --eval-every 0 --peak-gflops 100 --threads 1 " +
           args;
  }
  static Result pretrain(const std::string& run_dir, const std::string& args = "", int np = 1) {
    return sh("timeout 120 " + (np > 1 ? mpirun(np) : std::string()) + pretrain_cmd(run_dir, args));
  }
  static fs::path dir_;
};
fs::path RunDir::dir_;

// Holds <dir>/.lock as another run would, recording `who`.
class HeldLock {
 public:
  HeldLock(const fs::path& dir, const std::string& who) {
    fs::create_directories(dir);
    fd_ = ::open((dir / ".lock").c_str(), O_RDWR | O_CREAT, 0644);
    EXPECT_GE(fd_, 0);
    EXPECT_EQ(::flock(fd_, LOCK_EX | LOCK_NB), 0);
    EXPECT_EQ(::write(fd_, who.data(), who.size()), static_cast<ssize_t>(who.size()));
  }
  ~HeldLock() { ::close(fd_); }

 private:
  int fd_ = -1;
};

const std::string kHolder =
    R"({"host":"node17","pid":4242,"since":"2026-01-02T03:04:05Z","command":"chorus pretrain --run-dir x"})";

}  // namespace

TEST_F(RunDir, SecondRunIsRefusedNamingTheHolderAndLeavesTheDirectoryAsItWas) {
  const std::string run = path("held");
  ASSERT_EQ(pretrain(run).code, 0);
  const std::string config = slurp(run + "/config.json"), metrics = slurp(run + "/metrics.jsonl");
  ASSERT_FALSE(fs::exists(run + "/.lock")) << "a run that ended releases its lock";
  {
    HeldLock held(run, kHolder);
    for (int np : {1, 2}) {
      const Result r = pretrain(run, "--resume auto --steps 6", np);
      EXPECT_EQ(r.code, 1) << r.out;
      EXPECT_TRUE(has(r.out, "run-dir: '" + run + "' is in use by another run: host node17, pid 4242, since "
                                                  "2026-01-02T03:04:05Z (command: chorus pretrain --run-dir x)"))
          << r.out;
      if (np == 2) {
        EXPECT_FALSE(has(r.out, "MPI_ABORT")) << "every rank ends on its own: " << r.out;
      }
    }
    // finetune-speech takes the same lock before it writes anything.
    const Result r = sh(std::string(CHORUS_BINARY) + " finetune-speech --quiet --tokenizer " + path("tok.json") +
                        " --data " + path("no-speech") + " --init-decoder none --run-dir " + run);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_TRUE(has(r.out, "is in use by another run: host node17, pid 4242")) << r.out;
  }
  EXPECT_EQ(slurp(run + "/config.json"), config);
  EXPECT_EQ(slurp(run + "/metrics.jsonl"), metrics);

  // --save-dir elsewhere: that directory is locked as well.
  const std::string saves = path("held-saves");
  HeldLock held(saves, kHolder);
  const Result r = pretrain(path("held-2"), "--save-dir " + saves);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "save-dir: '" + saves + "' is in use by another run: host node17")) << r.out;
  EXPECT_FALSE(fs::exists(path("held-2"))) << "the run directory it created is removed again";
}

TEST_F(RunDir, ConcurrentRunRefusedThenItsStaleLockIsTakenOver) {
  const std::string run = path("live");
  // A long run in the background (killed below); $! is its pid.
  const Result bg = sh(pretrain_cmd(run, "--steps 1000000") + " > " + path("live.log") + " 2>&1 & echo $!");
  const std::string pid = bg.out.substr(0, bg.out.find('\n'));
  ASSERT_FALSE(pid.empty());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!has(slurp(run + "/.lock"), "\"pid\":" + pid) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::string record = slurp(run + "/.lock");
  ASSERT_TRUE(has(record, "\"pid\":" + pid)) << record << slurp(path("live.log"));
  const auto holder = nlohmann::json::parse(record);

  Result r = pretrain(run);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "is in use by another run: host " + holder["host"].get<std::string>() + ", pid " + pid +
                             ", since " + holder["since"].get<std::string>()))
      << r.out;

  ASSERT_EQ(sh("kill -9 " + pid).code, 0);
  while (sh("kill -0 " + pid).code == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(run + "/.lock")) << "SIGKILL leaves the lock file";
  r = pretrain(run);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "warning: run-dir: taking over the stale lock of '" + run + "' held by host " +
                             holder["host"].get<std::string>() + ", pid " + pid))
      << r.out;
  EXPECT_FALSE(fs::exists(run + "/.lock"));
}

TEST_F(RunDir, RefusedResumeLeavesConfigByteIdentical) {
  const std::string run = path("resume");
  ASSERT_EQ(pretrain(run, "--stop-at 2").code, 0);
  const std::string config = slurp(run + "/config.json"), metrics = slurp(run + "/metrics.jsonl");

  Result r = pretrain(run, "--resume auto --n-embd 32");  // another model size
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "field 'model.n_embd' is 64 but this run's model has 32")) << r.out;
  EXPECT_EQ(slurp(run + "/config.json"), config);
  EXPECT_EQ(slurp(run + "/metrics.jsonl"), metrics);

  const std::string tok2 = path("tok2.json");  // another tokenizer: refused by the shards
  ASSERT_EQ(sh(std::string(CHORUS_BINARY) + " train-tokenizer --quiet --input " + path("text") +
               " --vocab 300 --out " + tok2)
                .code,
            0);
  r = sh(pretrain_cmd(run, "--resume auto", "tok2.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "hash")) << r.out;
  EXPECT_EQ(slurp(run + "/config.json"), config);
  EXPECT_FALSE(fs::exists(run + "/.lock"));

  // A refused run into a new directory leaves nothing behind.
  r = pretrain(path("fresh/nested"), "--resume " + path("no-such-checkpoint"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_FALSE(fs::exists(path("fresh/nested"))) << r.out;

  // The accepted resume rewrites config.json, recording where it continued from.
  r = pretrain(run, "--resume auto");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(slurp(run + "/config.json"));
  EXPECT_EQ(j["resumed_from"]["step"], 2);
  EXPECT_TRUE(has(j["resumed_from"]["checkpoint"].get<std::string>(), "step-00000002"));
}

TEST_F(RunDir, SaveDirWithoutRoomForACheckpointIsRefusedBeforeAnythingIsWritten) {
  // A 1 MiB tmpfs (needs root and mount(2): skipped where not allowed).
  const std::string tiny = path("tiny");
  fs::create_directories(tiny);
  if (sh("mount -t tmpfs -o size=1m tmpfs " + tiny).code != 0) GTEST_SKIP() << "cannot mount a tmpfs here";
  struct Unmount {
    std::string at;
    ~Unmount() { sh("umount " + at); }
  } unmount{tiny};
  const std::string run = path("roomless"), saves = tiny + "/saves";
  const Result r = pretrain(run, "--save-dir " + saves);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("save-dir: '" + saves + "' has 1\\.0 MB free, but one checkpoint "
                                                  "of this model needs about [0-9.]+ MB \\(fp32 weights and AdamW "
                                                  "moments\\); free space or give another --save-dir")))
      << r.out;
  EXPECT_FALSE(fs::exists(run)) << "nothing written: the run directory it created is gone";
  EXPECT_FALSE(fs::exists(saves));
}

TEST_F(RunDir, FullDiskUnderMetricsOrStdoutFailsTheRun) {
  const fs::path run = path("full");
  fs::create_directories(run);
  fs::create_symlink("/dev/full", run / "metrics.jsonl");
  Result r = pretrain(run.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "metrics: writing '" + (run / "metrics.jsonl").string() +
                             "' failed: No space left on device"))
      << r.out;

  r = sh("timeout 120 " + pretrain_cmd(path("full-stdout"), "") + " > /dev/full");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "log: writing to stdout failed: No space left on device")) << r.out;
}

TEST_F(RunDir, ConfigRecordsBuildCommandSlurmLayoutAndFloatsAsGiven) {
  const std::string run = path("record");
  const Result r = sh("SLURM_JOB_ID=31337 SLURM_RESTART_COUNT=2 timeout 120 " +
                      pretrain_cmd(run, "--beta1 0.9 --lr 3e-4 --min-lr 0.00003 --save-every 2 --keep-last 1"));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string text = slurp(run + "/config.json");
  for (const char* line : {"\"beta1\": 0.9,", "\"beta2\": 0.95,", "\"lr\": 0.0003,", "\"min_lr\": 3e-05,",
                           "\"eps\": 1e-08,", "\"weight_decay\": 0.0,", "\"temperature\": 0.8,"})
    EXPECT_TRUE(has(text, line)) << line << "\n" << text;
  EXPECT_FALSE(has(text, "99999")) << text;
  const auto j = nlohmann::json::parse(text);
  const Result v = chorus::testing::chorus("--version");
  EXPECT_EQ(v.out, "chorus " + j["chorus"]["version"].get<std::string>() + " (git " +
                       j["chorus"]["git_revision"].get<std::string>() + ")\n");
  EXPECT_TRUE(has(j["command_line"].get<std::string>(), " pretrain --quiet --config ")) << j["command_line"];
  EXPECT_TRUE(has(j["command_line"].get<std::string>(), " --beta1 0.9 --lr 3e-4 ")) << j["command_line"];
  EXPECT_EQ(j["slurm"]["job_id"], "31337");
  EXPECT_EQ(j["slurm"]["restart_count"], "2");
  EXPECT_EQ(j["layout"], nlohmann::json({{"world", 1}, {"dp", 1}, {"tp", 1}, {"zero", 0}}));
  EXPECT_EQ(j["checkpoint"]["save_every"], 2);
  EXPECT_EQ(j["checkpoint"]["keep_last"], 1);
  EXPECT_EQ(j["precision"], "fp32");
  EXPECT_EQ(j["model"]["n_embd"], 64);
  EXPECT_TRUE(j["resumed_from"].is_null());
  EXPECT_FALSE(j["host"].get<std::string>().empty());
  EXPECT_FALSE(fs::exists(run + "/config.json.tmp"));
}

TEST_F(RunDir, VersionAndRevisionOutsideGit) {
  const Result v = chorus::testing::chorus("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_TRUE(std::regex_match(v.out, std::regex(R"(chorus [0-9]+\.[0-9]+\.[0-9]+ \(git ([0-9a-f]{12}(-dirty)?|unknown)\)\n)")))
      << v.out;
  // A source tree without .git (a release tarball) builds with revision "unknown".
  const std::string empty = path("no-git"), out = path("no-git/rev.h");
  fs::create_directories(empty);
  const Result c = sh("cmake -DSRC=" + empty + " -DOUT=" + out + " -P " + CHORUS_SOURCE_DIR + "/cmake/git_revision.cmake");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_TRUE(has(slurp(out), "#define CHORUS_GIT_REVISION \"unknown\"")) << slurp(out);
}
