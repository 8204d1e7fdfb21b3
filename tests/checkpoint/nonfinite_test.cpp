// Non-finite state and checkpoints: a save of parameters or Adam moments
// holding a NaN or Inf is refused before anything is written, naming the
// tensor, and keep-last deletes nothing; `verify` names the tensor and the
// file of a checkpoint whose files (digests intact) hold a NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "checkpoint/durable.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard_file.h"
#include "checkpoint/state.h"
#include "checkpoint/tools.h"
#include "ckpt_fixture.h"

using namespace ckpt_test;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Saves steps 1 and 2 (keep-last 2), then poisons one value with `poison` and
// expects the save of step 3 to be refused naming `needles`, leaving 1 and 2.
void expect_save_refused(TinyState& s, const TempDir& tmp, const std::function<void()>& poison,
                         std::initializer_list<std::string> needles) {
  s.save(tmp.path.string(), 1, 2);
  s.save(tmp.path.string(), 2, 2);
  poison();
  expect_throw_with<chorus::Error>([&] { s.save(tmp.path.string(), 3, 2); }, needles);
  EXPECT_TRUE(fs::exists(tmp.path / "step-00000001")) << "keep-last pruned after a refused save";
  EXPECT_TRUE(fs::exists(tmp.path / "step-00000002"));
  EXPECT_FALSE(fs::exists(tmp.path / "step-00000003"));
  EXPECT_FALSE(fs::exists(tmp.path / "step-00000003.tmp")) << "nothing is written";
  EXPECT_EQ(fs::read_symlink(tmp.path / "latest").string(), "step-00000002");
  EXPECT_TRUE(chorus::checkpoint::verify(tmp.path.string()).empty());
}

// Rewrites file `name` of checkpoint `dir` with write() and records its new
// size and digest in the manifest, as a save of that state would have.
void rewrite_file(const std::string& dir, const std::string& name, const std::function<void(const std::string&)>& write) {
  write(dir + "/" + name);
  auto m = chorus::checkpoint::read_manifest(dir + "/manifest.json");
  for (auto& f : m.files) {
    if (f.path != name) continue;
    const auto d = chorus::checkpoint::digest_file(dir + "/" + name);
    f.bytes = d.bytes;
    f.sha256 = d.sha256;
  }
  chorus::checkpoint::write_manifest(dir + "/manifest.json", m);
  ASSERT_TRUE(chorus::checkpoint::check_all_files(dir, m).empty()) << "the digests match again";
}

// Rewrites the model file of checkpoint `dir` from s's (poisoned) parameters.
void rewrite_model_file(const std::string& dir, const TinyState& s) {
  rewrite_file(dir, "model-tp00.h5", [&](const std::string& p) {
    chorus::checkpoint::write_model_file(p, s.st.tensors, s.st.offsets, s.st.params.data(), 0, 1, 3);
  });
}

}  // namespace

TEST(NonFinite, SaveRefusesANaNParameterNamingTheTensorAndPrunesNothing) {
  TempDir tmp("nonfinite");
  TinyState s;
  const auto& t = s.st.tensors[3];
  expect_save_refused(
      s, tmp, [&] { s.model.params()[s.st.offsets[3] + 5] = kNaN; },
      {"refusing to save step 3", "tensor '" + t.name + "' holds nan in its parameters at element 5",
       "world rank 0", "existing checkpoints", "are kept"});
}

TEST(NonFinite, SaveRefusesAnInfAdamMomentNamingTheTensor) {
  TempDir tmp("nonfinite");
  TinyState s;
  const auto& t = s.st.tensors.back();
  expect_save_refused(
      s, tmp, [&] { s.v[s.st.offsets.back() + 1] = kInf; },
      {"refusing to save step 3", "tensor '" + t.name + "' holds inf in its exp_avg_sq at element 1"});
}

TEST(NonFinite, FirstNonFiniteFindsTheFirstIndex) {
  std::vector<float> v(1000, 1.0f);
  EXPECT_EQ(chorus::checkpoint::first_nonfinite(v.data(), v.size()), v.size());
  v[700] = kInf;
  v[321] = -kNaN;
  EXPECT_EQ(chorus::checkpoint::first_nonfinite(v.data(), v.size()), 321u);
}

TEST(NonFinite, VerifyNamesTheTensorAndFileOfANaNParameter) {
  TempDir tmp("nonfinite");
  TinyState s;
  const std::string dir = s.save(tmp.path.string()).path;
  ASSERT_TRUE(chorus::checkpoint::verify(dir).empty());
  const size_t k = 2;
  s.model.params()[s.st.offsets[k] + 7] = kNaN;
  rewrite_model_file(dir, s);
  const auto problems = chorus::checkpoint::verify(dir);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("checkpoint file '" + dir + "/model-tp00.h5': the parameters of tensor '" +
                             s.st.tensors[k].name + "' holds nan at element 7"),
            std::string::npos)
      << problems[0];
}

TEST(NonFinite, VerifyNamesTheTensorAndFileOfAnInfMoment) {
  TempDir tmp("nonfinite");
  TinyState s;
  const std::string dir = s.save(tmp.path.string()).path;
  s.m[s.st.offsets[1] + 3] = -kInf;
  rewrite_file(dir, "optim-tp00-dp00.h5", [&](const std::string& p) {
    chorus::checkpoint::write_optimizer_file(p, s.st.tensors, s.st.offsets, s.st.params.size(), s.st.opt_range,
                                             s.m.data(), s.v.data(), chorus::checkpoint::Layout{1, 1, 0}, 0, 0, 3);
  });
  const auto problems = chorus::checkpoint::verify(dir);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("optim-tp00-dp00.h5': exp_avg of tensor '" + s.st.tensors[1].name +
                             "' holds -inf at element 3"),
            std::string::npos)
      << problems[0];
}

TEST(NonFinite, ResumeAutoSkipsACheckpointHoldingANaNAndLoadingItIsRefused) {
  // As a build without the guard left them: step 2 (`latest`) holds a NaN.
  TempDir tmp("nonfinite");
  TinyState s;
  s.save(tmp.path.string(), 1);
  const std::string dir = s.save(tmp.path.string(), 2).path;
  s.model.params()[s.st.offsets[0]] = kNaN;
  rewrite_model_file(dir, s);
  LoadTarget t(s);
  expect_throw_with<chorus::checkpoint::CorruptCheckpoint>(
      [&] { t.load(dir, s.tok_hash); },
      {dir, "tensor '" + s.st.tensors[0].name + "' holds nan in its parameters at element 0", "diverged"});
  dist::ParallelGrid grid = dist::ParallelGrid::single();
  const auto r = chorus::checkpoint::resume_checkpoint(grid, "auto", tmp.path.string(), 0, tiny_config(), s.tok_hash,
                                                       t.st);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->manifest.step, 1);
  for (float x : t.p) ASSERT_TRUE(std::isfinite(x));
}
