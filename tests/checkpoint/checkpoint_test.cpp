// Saving and loading a training state in one process: bit-exact round trip,
// the commit protocol (step-N.tmp -> step-N, `latest` last, keep-last),
// deterministic files, resume candidates, and every refusal (truncated,
// bit-flipped or missing files, edited manifests, another config, tokenizer
// or format version) with the offending file or field named.
#include <gtest/gtest.h>

#include "checkpoint/durable.h"
#include "checkpoint/manifest.h"
#include "checkpoint/state.h"
#include "ckpt_fixture.h"

using namespace ckpt_test;
using chorus::checkpoint::CorruptCheckpoint;

TEST(Checkpoint, SaveLoadRoundTripIsBitExact) {
  TempDir tmp("ckpt");
  TinyState s;
  const auto r = s.save(tmp.path.string());
  EXPECT_EQ(r.path, tmp / "step-00000003");
  EXPECT_EQ(r.n_files, 2);
  LoadTarget t(s);
  const auto l = t.load(r.path, s.tok_hash);
  EXPECT_TRUE(same_floats(t.p, s.st.params));
  EXPECT_TRUE(same_floats(t.m, s.m));
  EXPECT_TRUE(same_floats(t.v, s.v));
  EXPECT_FALSE(l.resharded);
  EXPECT_TRUE(l.rng_restored);
  EXPECT_EQ(t.st.rng, s.st.rng);
  const auto& m = l.manifest;
  EXPECT_EQ(m.step, 3);
  EXPECT_EQ(m.tokens_seen, 192u);
  EXPECT_EQ(m.sampler.consumed, 24u);
  EXPECT_EQ(m.schedule.position, 3);
  EXPECT_EQ(m.optimizer.t, 3);
  EXPECT_FLOAT_EQ(m.schedule.max_lr, 1e-2f);
  EXPECT_FALSE(m.loss_scaler.enabled);
  EXPECT_EQ(m.loss_scaler.scale, 1.0);
  EXPECT_EQ(m.layout, (chorus::checkpoint::Layout{1, 1, 0}));
  EXPECT_EQ(m.eot_token, 99);
  EXPECT_EQ(l.bytes, m.total_bytes());
}

TEST(Checkpoint, CommitsUnderItsNameAndPointsLatestAtIt) {
  TempDir tmp("ckpt");
  TinyState s;
  s.save(tmp.path.string(), 2);
  s.save(tmp.path.string(), 4);
  EXPECT_TRUE(fs::is_symlink(tmp.path / "latest"));
  EXPECT_EQ(fs::read_symlink(tmp.path / "latest").string(), "step-00000004");
  EXPECT_FALSE(fs::exists(tmp.path / "step-00000004.tmp"));
  EXPECT_EQ(chorus::checkpoint::resolve_checkpoint_dir(tmp.path.string()), tmp / "step-00000004");
  // every file's size and digest are in the manifest
  const auto m = chorus::checkpoint::read_manifest(tmp / "step-00000004/manifest.json");
  for (const auto& f : m.files) {
    const auto d = chorus::checkpoint::digest_file(tmp / ("step-00000004/" + f.path));
    EXPECT_EQ(d.bytes, f.bytes) << f.path;
    EXPECT_EQ(d.sha256, f.sha256) << f.path;
  }
  EXPECT_TRUE(chorus::checkpoint::check_all_files(tmp / "step-00000004", m).empty());
}

TEST(Checkpoint, SameStateGivesByteIdenticalFiles) {
  TempDir tmp("ckpt");
  TinyState s;
  s.save(tmp / "a");
  s.save(tmp / "b");
  const auto a = chorus::checkpoint::read_manifest(tmp / "a/step-00000003/manifest.json");
  const auto b = chorus::checkpoint::read_manifest(tmp / "b/step-00000003/manifest.json");
  ASSERT_EQ(a.files.size(), b.files.size());
  for (size_t i = 0; i < a.files.size(); ++i)
    EXPECT_EQ(a.files[i].sha256, b.files[i].sha256) << a.files[i].path;
}

TEST(Checkpoint, KeepLastDeletesOlderOnesOnlyAfterCommitting) {
  TempDir tmp("ckpt");
  TinyState s;
  for (int step = 1; step <= 4; ++step) s.save(tmp.path.string(), step, /*keep_last=*/2);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp.path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000003", "step-00000004"}));
}

TEST(Checkpoint, LeftoversOfInterruptedSavesAreIgnoredThenRemoved) {
  TempDir tmp("ckpt");
  TinyState s;
  s.save(tmp.path.string(), 2);
  fs::create_directories(tmp.path / "step-00000009.tmp");  // a save killed mid-write
  fs::create_directories(tmp.path / "step-00000001.deleting");
  auto c = chorus::checkpoint::resume_candidates(tmp.path.string());
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0], tmp / "step-00000002");
  s.save(tmp.path.string(), 4);
  EXPECT_FALSE(fs::exists(tmp.path / "step-00000009.tmp"));
  EXPECT_FALSE(fs::exists(tmp.path / "step-00000001.deleting"));
}

TEST(Checkpoint, ResumeCandidatesStartAtLatestThenOlder) {
  TempDir tmp("ckpt");
  TinyState s;
  for (int step : {2, 4, 6}) s.save(tmp.path.string(), step);
  // latest is moved back to 4 (as after an explicit resume): 6 is another timeline
  fs::remove(tmp.path / "latest");
  fs::create_symlink("step-00000004", tmp.path / "latest");
  auto c = chorus::checkpoint::resume_candidates(tmp.path.string());
  EXPECT_EQ(c, (std::vector<std::string>{tmp / "step-00000004", tmp / "step-00000002"}));
  EXPECT_TRUE(chorus::checkpoint::resume_candidates(tmp / "nothing-here").empty());
}

TEST(Checkpoint, ResumeAutoStartsFreshWithoutCheckpointsAndSkipsADamagedLatest) {
  TempDir tmp("ckpt");
  TinyState s;
  LoadTarget t(s);
  auto grid = chorus::dist::ParallelGrid::single();
  EXPECT_FALSE(
      chorus::checkpoint::resume_checkpoint(grid, "auto", tmp / "empty", 0, tiny_config(), s.tok_hash, t.st));
  s.save(tmp.path.string(), 2);
  TinyState s2(77);  // different values at step 4
  s2.save(tmp.path.string(), 4);
  flip_byte(tmp / "step-00000004/optim-tp00-dp00.h5", 5000);
  auto r = chorus::checkpoint::resume_checkpoint(grid, "auto", tmp.path.string(), 0, tiny_config(),
                                                 s.tok_hash, t.st);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->manifest.step, 2);
  EXPECT_TRUE(same_floats(t.p, s.st.params));
  // an explicit path is refused instead
  expect_throw_with<CorruptCheckpoint>(
      [&] {
        chorus::checkpoint::resume_checkpoint(grid, tmp.path.string(), "", 0, tiny_config(), s.tok_hash,
                                              t.st);
      },
      {"optim-tp00-dp00.h5", "SHA-256"});
  // all damaged: refused, not a silent fresh start
  flip_byte(tmp / "step-00000002/model-tp00.h5", 3000);
  expect_throw_with<chorus::Error>(
      [&] {
        chorus::checkpoint::resume_checkpoint(grid, "auto", tmp.path.string(), 0, tiny_config(), s.tok_hash,
                                              t.st);
      },
      {"none of the 2 checkpoints", "model-tp00.h5", "optim-tp00-dp00.h5"});
}

TEST(Checkpoint, RefusesATruncatedFileNamingIt) {
  TempDir tmp("ckpt");
  TinyState s;
  const auto r = s.save(tmp.path.string());
  const std::string f = r.path + "/model-tp00.h5";
  fs::resize_file(f, fs::file_size(f) / 2);
  LoadTarget t(s);
  expect_throw_with<CorruptCheckpoint>([&] { t.load(r.path, s.tok_hash); }, {f, "truncated"});
}

TEST(Checkpoint, RefusesABitFlipNamingTheFile) {
  TempDir tmp("ckpt");
  TinyState s;
  const auto r = s.save(tmp.path.string());
  const std::string f = r.path + "/optim-tp00-dp00.h5";
  flip_byte(f, fs::file_size(f) - 100);
  LoadTarget t(s);
  expect_throw_with<CorruptCheckpoint>([&] { t.load(r.path, s.tok_hash); }, {f, "SHA-256", "corrupt"});
}

TEST(Checkpoint, RefusesAMissingShard) {
  TempDir tmp("ckpt");
  TinyState s;
  const auto r = s.save(tmp.path.string());
  fs::remove(r.path + "/model-tp00.h5");
  LoadTarget t(s);
  expect_throw_with<CorruptCheckpoint>([&] { t.load(r.path, s.tok_hash); },
                                       {r.path + "/model-tp00.h5", "missing"});
  // a manifest that does not list one is refused too
  auto m = chorus::checkpoint::read_manifest(r.path + "/manifest.json");
  m.files.erase(m.files.begin() + 1);
  chorus::checkpoint::write_manifest(r.path + "/manifest.json", m);
  expect_throw_with<chorus::Error>([&] { t.load(r.path, s.tok_hash); }, {"optimizer file", "missing shard"});
}

TEST(Checkpoint, RefusesAnEditedOrDamagedManifest) {
  TempDir tmp("ckpt");
  TinyState s;
  const auto r = s.save(tmp.path.string());
  const std::string mpath = r.path + "/manifest.json";
  std::string text = chorus::checkpoint::read_small_file(mpath);
  const auto pos = text.find("\"step\": 3");
  ASSERT_NE(pos, std::string::npos) << text;
  text.replace(pos, 9, "\"step\": 4");
  std::ofstream(mpath) << text;
  LoadTarget t(s);
  expect_throw_with<CorruptCheckpoint>([&] { t.load(r.path, s.tok_hash); }, {mpath, "manifest_sha256"});
  std::ofstream(mpath) << text.substr(0, text.size() / 2);
  expect_throw_with<CorruptCheckpoint>([&] { t.load(r.path, s.tok_hash); }, {mpath, "not valid JSON"});
}

TEST(Checkpoint, RefusesAnotherModelConfigOrTokenizerNamingTheField) {
  TempDir tmp("ckpt");
  TinyState s;
  const auto r = s.save(tmp.path.string());
  LoadTarget t(s);
  auto grid = chorus::dist::ParallelGrid::single();
  auto other = tiny_config();
  other.context = 32;
  expect_throw_with<chorus::Error>(
      [&] { chorus::checkpoint::load_checkpoint(grid, r.path, 0, other, s.tok_hash, t.st); },
      {"model.context", "16", "32"});
  expect_throw_with<chorus::Error>([&] { t.load(r.path, std::string(64, 'b')); },
                                   {"tokenizer.hash", s.tok_hash, std::string(64, 'b')});
}

TEST(Checkpoint, RefusesAnUnknownFormatVersion) {
  TempDir tmp("ckpt");
  TinyState s;
  const auto r = s.save(tmp.path.string());
  auto m = chorus::checkpoint::read_manifest(r.path + "/manifest.json");
  m.format_version = 2;
  chorus::checkpoint::write_manifest(r.path + "/manifest.json", m);  // with a valid self-hash
  LoadTarget t(s);
  expect_throw_with<chorus::Error>([&] { t.load(r.path, s.tok_hash); },
                                   {"format_version", "is 2", "reads version 1"});
}

TEST(Checkpoint, ReplacesACheckpointOfTheSameStepFromAnAbandonedRun) {
  TempDir tmp("ckpt");
  TinyState a(1), b(2);
  a.save(tmp.path.string(), 3);
  b.save(tmp.path.string(), 3);
  LoadTarget t(b);
  t.load(tmp / "step-00000003", b.tok_hash);
  EXPECT_TRUE(same_floats(t.p, b.st.params));
  EXPECT_FALSE(fs::exists(tmp.path / "step-00000003.replaced"));
}
