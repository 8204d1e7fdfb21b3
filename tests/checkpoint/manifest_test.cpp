// manifest.json: round trip, self-hash, field-level refusals naming the field
// and what was expected, the completeness check of the file list, and the
// layout helpers (file names, ZeRO slices, step directory names).
#include "checkpoint/manifest.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "checkpoint/layout.h"
#include "ckpt_fixture.h"
#include "core/hash.h"

using namespace ckpt_test;
using namespace chorus::checkpoint;
using nlohmann::json;

namespace {

Manifest sample() {
  TinyState s;
  Manifest m = s.meta;
  m.tensors = s.st.tensors;
  m.created = "2024-01-01T00:00:00Z";
  m.rng.push_back({0, 0, 0, {1, 2, 0xffffffffffffffffull, 4}});
  size_t n = 0;
  local_offsets(m.tensors, 1, &n);
  m.files.push_back({"model-tp00.h5", "model", 0, 0, 0, 0, 0, 123, std::string(64, '0')});
  m.files.push_back({"optim-tp00-dp00.h5", "optimizer", 0, 0, 0, n, n, 456, std::string(64, '1')});
  return m;
}

}  // namespace

TEST(Manifest, RoundTripsEveryField) {
  const Manifest m = sample();
  const json j = manifest_to_json(m);
  EXPECT_EQ(j.at("format"), "chorus-checkpoint");
  EXPECT_EQ(j.at("manifest_sha256").get<std::string>().size(), 64u);
  const Manifest b = manifest_from_json(json::parse(j.dump()), "test");
  EXPECT_EQ(manifest_to_json(b), j);
  EXPECT_EQ(b.rng.at(0).state[2], 0xffffffffffffffffull);
  EXPECT_EQ(b.files.at(1).flat_end, m.files.at(1).flat_end);
  EXPECT_EQ(b.tensors.size(), m.tensors.size());
  EXPECT_EQ(b.tensors.at(4).tp_parts, 3);
  EXPECT_NO_THROW(check_complete(b, "test"));
}

TEST(Manifest, RefusesBadFieldsByName) {
  auto with = [](auto edit) {
    json j = manifest_to_json(sample());
    edit(j);
    j.erase("manifest_sha256");
    j["manifest_sha256"] = chorus::sha256_hex(j.dump());  // a consistent (re-hashed) edit
    return j;
  };
  expect_throw_with<chorus::Error>(
      [&] { manifest_from_json(with([](json& j) { j["model"].erase("n_head"); }), "m.json"); },
      {"m.json", "model.n_head", "missing"});
  expect_throw_with<chorus::Error>(
      [&] { manifest_from_json(with([](json& j) { j["sampler"]["consumed"] = "many"; }), "m.json"); },
      {"sampler.consumed", "expected a non-negative integer", "found a string"});
  expect_throw_with<chorus::Error>(
      [&] { manifest_from_json(with([](json& j) { j["rng"][0]["state"][1] = "xyz"; }), "m.json"); },
      {"rng[0].state[1]", "16 lowercase hex digits"});
  expect_throw_with<chorus::Error>(
      [&] { manifest_from_json(with([](json& j) { j["format"] = "something-else"; }), "m.json"); },
      {"format", "something-else", "chorus-checkpoint"});
  expect_throw_with<chorus::Error>(
      [&] { manifest_from_json(with([](json& j) { j["files"][0]["path"] = "../x.h5"; }), "m.json"); },
      {"files[0].path", "plain file name"});
  expect_throw_with<chorus::Error>(
      [&] { manifest_from_json(with([](json& j) { j["layout"]["zero"] = 2; }), "m.json"); }, {"layout.zero"});
  // Found by tests/fuzz: tp x dp overflowed int (UBSan), and a learning rate
  // beyond the float range became Inf, saved as null.
  expect_throw_with<chorus::Error>(
      [&] {
        manifest_from_json(with([](json& j) {
                             j["layout"] = {{"tp", 65536}, {"dp", 65536}, {"zero", 0}, {"world", 1}};
                           }),
                           "m.json");
      },
      {"layout.dp", "is 65536", "[1, 32767]"});
  expect_throw_with<chorus::Error>(
      [&] { manifest_from_json(with([](json& j) { j["schedule"]["max_lr"] = 1e300; }), "m.json"); },
      {"schedule.max_lr", "expected a float"});
}

// The optimizer's type: adamw or muon (with Muon's settings); a manifest
// without the key (older ones) means adamw; anything else is refused by name.
TEST(Manifest, RecordsTheOptimizer) {
  Manifest m = sample();
  m.optimizer.type = "muon";
  m.optimizer.muon_lr = 0.02f;
  m.optimizer.muon_momentum = 0.95f;
  const Manifest b = manifest_from_json(json::parse(manifest_to_json(m).dump()), "test");
  EXPECT_EQ(b.optimizer.type, "muon");
  EXPECT_EQ(b.optimizer.muon_lr, 0.02f);
  EXPECT_EQ(b.optimizer.muon_momentum, 0.95f);
  EXPECT_TRUE(b.optimizer.muon_nesterov);
  auto rehash = [](json j) {
    j.erase("manifest_sha256");
    j["manifest_sha256"] = chorus::sha256_hex(j.dump());
    return j;
  };
  json old = manifest_to_json(sample());
  old["optimizer"].erase("type");
  EXPECT_EQ(manifest_from_json(rehash(old), "old.json").optimizer.type, "adamw");
  json bad = manifest_to_json(sample());
  bad["optimizer"]["type"] = "sgd";
  expect_throw_with<chorus::Error>([&] { manifest_from_json(rehash(bad), "m.json"); },
                                   {"m.json", "optimizer.type", "sgd", "'adamw' or 'muon'"});
}

// Found by tests/fuzz: the self-hash copies the whole JSON tree recursively,
// so a manifest of nested brackets overflowed the stack (a crash).
TEST(Manifest, RefusesDeeplyNestedJsonAsCorrupt) {
  const std::string path = ::testing::TempDir() + "/deep_manifest.json";
  json j = manifest_to_json(sample());
  std::string text = j.dump();
  const size_t depth = 200000;
  text.insert(text.size() - 1, ",\"run_extra\":" + std::string(depth, '[') + std::string(depth, ']'));
  std::ofstream(path) << text;
  expect_throw_with<CorruptCheckpoint>(
      [&] { read_manifest(path); }, {"deep_manifest.json", "not valid JSON", "nested deeper than 64 levels"});
  std::remove(path.c_str());
}

TEST(Manifest, DetectsAnyEditThroughItsSelfHash) {
  json j = manifest_to_json(sample());
  j["tokens_seen"] = 1;
  expect_throw_with<CorruptCheckpoint>([&] { manifest_from_json(j, "m.json"); },
                                       {"m.json", "manifest_sha256"});
}

TEST(Manifest, CompletenessNamesTheMissingShard) {
  Manifest m = sample();
  m.files.erase(m.files.begin());
  expect_throw_with<chorus::Error>([&] { check_complete(m, "m.json"); },
                                   {"model file for TP rank 0", "missing"});
  m = sample();
  m.layout = {1, 2, 1};  // ZeRO 1 over 2 DP ranks needs two optimizer slices
  expect_throw_with<chorus::Error>([&] { check_complete(m, "m.json"); }, {"expected 2 optimizer file(s)"});
  m = sample();
  m.files[1].flat_end -= 1;
  expect_throw_with<chorus::Error>([&] { check_complete(m, "m.json"); },
                                   {"optim-tp00-dp00.h5", "expected DP rank 0"});
}

TEST(Manifest, RefusesAnotherRunNamingTheField) {
  const Manifest m = sample();
  auto c = tiny_config();
  c.n_embd = 64;
  expect_throw_with<chorus::Error>([&] { check_matches_run(m, "ck", c, m.tokenizer_hash); },
                                   {"model.n_embd", "is 32", "has 64"});
  auto t = m.tensors;
  t[3].tp_axis = 0;
  expect_throw_with<chorus::Error>([&] { check_tensors_match(m, "ck", t); }, {t[3].name, "axis"});
}

TEST(Layout, NamesSlicesAndStepDirectories) {
  EXPECT_EQ(model_file_name(1), "model-tp01.h5");
  EXPECT_EQ(optimizer_file_name(1, 12), "optim-tp01-dp12.h5");
  EXPECT_EQ(step_dir_name(1000), "step-00001000");
  EXPECT_EQ(parse_step_dir_name("step-00001000"), 1000);
  EXPECT_EQ(parse_step_dir_name("step-123456789"), 123456789);
  EXPECT_EQ(parse_step_dir_name("step-00001000.tmp"), -1);
  EXPECT_EQ(parse_step_dir_name("step-0001"), -1);
  EXPECT_EQ(parse_step_dir_name("latest"), -1);
  // ZeRO-1 slices match the DistributedOptimizer's chunks: the first n % dp get one more
  const Layout z{1, 3, 1};
  EXPECT_EQ(optimizer_range(10, z, 0).begin, 0u);
  EXPECT_EQ(optimizer_range(10, z, 0).end, 4u);
  EXPECT_EQ(optimizer_range(10, z, 2).begin, 7u);
  EXPECT_EQ(optimizer_range(10, z, 2).end, 10u);
  EXPECT_EQ(optimizer_range(10, Layout{1, 3, 0}, 2).end, 10u);
  EXPECT_TRUE(stores_optimizer_file(z, 2));
  EXPECT_FALSE(stores_optimizer_file(Layout{1, 3, 0}, 2));
}
