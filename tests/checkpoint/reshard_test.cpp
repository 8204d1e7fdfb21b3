// Resharding at the file level: a checkpoint rewritten for TP 2 / 4, DP 2
// with ZeRO 1 and back keeps every global tensor (parameters and Adam
// moments) bit for bit, `checkpoint hash` does not change, a round trip gives
// byte-identical files, and loading a TP-2 checkpoint into a TP-1 rank (the
// start-up reshard path) gives back the original state.
#include <gtest/gtest.h>

#include "checkpoint/manifest.h"
#include "checkpoint/state.h"
#include "checkpoint/tools.h"
#include "ckpt_fixture.h"

using namespace ckpt_test;
using chorus::checkpoint::Layout;

TEST(Reshard, RoundTripsKeepTheGlobalStateAndTheHash) {
  TempDir tmp("reshard");
  TinyState s;
  const std::string src = s.save(tmp / "run").path;
  const std::string h = chorus::checkpoint::hash(src, false), ho = chorus::checkpoint::hash(src, true);
  const auto m0 = chorus::checkpoint::read_manifest(src + "/manifest.json");
  const auto g0 = chorus::checkpoint::read_global(src, m0, true);

  std::string prev = src;
  int i = 0;
  for (Layout l : {Layout{2, 1, 0}, Layout{2, 2, 1}, Layout{4, 1, 0}, Layout{1, 2, 1}, Layout{2, 4, 1},
                   Layout{1, 1, 0}}) {
    const std::string out = tmp / chorus::strfmt("r%d", i++);
    const auto nm = chorus::checkpoint::reshard(prev, out, l);
    EXPECT_EQ(nm.layout, l);
    EXPECT_EQ(nm.step, m0.step);
    EXPECT_EQ(nm.sampler.consumed, m0.sampler.consumed);
    EXPECT_EQ(chorus::checkpoint::hash(out, false), h) << l.describe();
    EXPECT_EQ(chorus::checkpoint::hash(out, true), ho) << l.describe();
    EXPECT_TRUE(chorus::checkpoint::verify(out).empty()) << l.describe();
    const auto g = chorus::checkpoint::read_global(out, nm, true);
    EXPECT_TRUE(same_floats(g.params, g0.params)) << l.describe();
    EXPECT_TRUE(same_floats(g.exp_avg, g0.exp_avg)) << l.describe();
    EXPECT_TRUE(same_floats(g.exp_avg_sq, g0.exp_avg_sq)) << l.describe();
    prev = out;
  }
  // Back at TP 1 / DP 1: the same files, byte for byte.
  const auto back = chorus::checkpoint::read_manifest(prev + "/manifest.json");
  ASSERT_EQ(back.files.size(), m0.files.size());
  for (size_t k = 0; k < m0.files.size(); ++k)
    EXPECT_EQ(back.files[k].sha256, m0.files[k].sha256) << m0.files[k].path;
  // The world size changed on the way, so the RNG states were dropped.
  EXPECT_TRUE(back.rng.empty());
}

TEST(Reshard, ShardFilesHoldTheirSlicesWithGlobalShapes) {
  TempDir tmp("reshard");
  TinyState s;
  const std::string src = s.save(tmp / "run").path;
  const std::string out = tmp / "tp2";
  chorus::checkpoint::reshard(src, out, Layout{2, 2, 1});
  const std::string report = chorus::checkpoint::inspect(out, true);
  EXPECT_NE(report.find("tp 2 x dp 2, zero 1"), std::string::npos) << report;
  EXPECT_NE(report.find("model-tp01.h5"), std::string::npos) << report;
  EXPECT_NE(report.find("optim-tp01-dp01.h5"), std::string::npos) << report;
  // c_attn (96, 32) in 3 parts over TP 2: each rank holds (48, 32); c_proj (32, 32) split on columns
  EXPECT_NE(
      report.find("h.0.attn.c_attn.weight       (96, 32)       split on axis 0 in 3 parts local (48, 32)"),
      std::string::npos)
      << report;
  EXPECT_NE(
      report.find("h.0.attn.c_proj.weight       (32, 32)       split on axis 1            local (32, 16)"),
      std::string::npos)
      << report;
  EXPECT_NE(
      report.find("wte.weight                   (128, 32)      split on axis 0            local (64, 32)"),
      std::string::npos)
      << report;
}

TEST(Reshard, ATp2CheckpointLoadsIntoATp1RankAtStartUp) {
  TempDir tmp("reshard");
  TinyState s;
  const std::string src = s.save(tmp / "run").path;
  const std::string tp2 = tmp / "tp2";
  chorus::checkpoint::reshard(src, tp2, Layout{2, 1, 1});
  LoadTarget t(s);
  const auto l = t.load(tp2, s.tok_hash);
  EXPECT_TRUE(l.resharded);
  EXPECT_TRUE(same_floats(t.p, s.st.params));
  EXPECT_TRUE(same_floats(t.m, s.m));
  EXPECT_TRUE(same_floats(t.v, s.v));
  EXPECT_FALSE(l.rng_restored);  // saved by 2 ranks, loaded by 1
}

TEST(Reshard, RefusesALayoutTheModelCannotBeSplitInto) {
  TempDir tmp("reshard");
  TinyState s;
  const std::string src = s.save(tmp / "run").path;
  expect_throw_with<chorus::Error>(
      [&] {
        chorus::checkpoint::reshard(src, tmp / "tp3", Layout{3, 1, 0});
      },
      {"wte.weight", "tp 3"});
  expect_throw_with<chorus::Error>(
      [&] {
        chorus::checkpoint::reshard(src, src, Layout{1, 1, 0});
      },
      {"already exists"});
}
