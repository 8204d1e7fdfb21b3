// Export: a checkpoint becomes (1) a chorus weights file that loads into a
// Gpt with identical parameters and hashes like the checkpoint, and (2) a
// GPT-2 safetensors directory: names, shapes (Conv1D transposed, wte
// unpadded) and values are checked by parsing the file here, and, where
// Debian's python3-torch is installed, PyTorch loads it and computes the same
// logits as Chorus.
#include <gtest/gtest.h>

#include "common/process.h"
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "checkpoint/tools.h"
#include "checkpoint/weights.h"
#include "core/dtype.h"
#include "ckpt_fixture.h"

using namespace ckpt_test;
using nlohmann::json;

namespace {

struct St {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

std::map<std::string, St> read_safetensors(const std::string& path, json* header_out) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data should start 8-byte aligned";
  const json header = json::parse(bytes.substr(8, n));
  if (header_out) *header_out = header;
  std::map<std::string, St> out;
  uint64_t expect_begin = 0;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string dtype = info.at("dtype").get<std::string>();
    EXPECT_TRUE(dtype == "F32" || dtype == "BF16") << name << ": " << dtype;
    const size_t elem = dtype == "BF16" ? 2 : 4;
    St t;
    t.shape = info.at("shape").get<std::vector<int64_t>>();
    const uint64_t b = info.at("data_offsets")[0], e = info.at("data_offsets")[1];
    size_t numel = 1;
    for (auto d : t.shape) numel *= static_cast<size_t>(d);
    EXPECT_EQ(e - b, numel * elem) << name;
    EXPECT_LE(8 + n + e, bytes.size()) << name;
    t.data.resize(numel);
    if (elem == 4) {
      std::memcpy(t.data.data(), bytes.data() + 8 + n + b, numel * 4);
    } else {
      std::vector<chorus::bf16> h(numel);
      std::memcpy(h.data(), bytes.data() + 8 + n + b, numel * 2);
      chorus::convert(t.data.data(), h.data(), numel);
    }
    out[name] = std::move(t);
    (void)expect_begin;
  }
  return out;
}

std::string run(const std::string& cmd, int* code) {
  auto r = chorus::testing::sh(cmd);
  *code = r.code;
  return r.out;
}

}  // namespace

TEST(Export, ChorusWeightsLoadIntoAGptAndHashLikeTheCheckpoint) {
  TempDir tmp("export");
  TinyState s;
  const std::string ckpt = s.save(tmp / "run").path;
  const std::string out = tmp / "model.h5";
  chorus::checkpoint::export_weights(ckpt, out);
  const auto header = chorus::checkpoint::read_weights_header(out);
  EXPECT_EQ(header.config.n_layer, 2);
  EXPECT_EQ(header.config.vocab_size, 100);
  EXPECT_EQ(header.tokenizer_hash, s.tok_hash);
  chorus::models::Gpt g(header.config, 1, 4);
  chorus::checkpoint::load_weights(out, g, s.tok_hash);
  expect_every_tensor_distinct(g);
  EXPECT_TRUE(same_floats(g.params(), s.st.params));
  EXPECT_EQ(chorus::checkpoint::hash(out, false), chorus::checkpoint::hash(ckpt, false));
}

TEST(Export, SafetensorsHasGpt2NamesShapesAndValues) {
  TempDir tmp("export");
  TinyState s;
  const std::string ckpt = s.save(tmp / "run").path;
  const std::string out = tmp / "hf";
  chorus::checkpoint::export_safetensors(ckpt, out);
  json header;
  const auto st = read_safetensors(out + "/model.safetensors", &header);
  EXPECT_EQ(header.at("__metadata__").at("format"), "pt");
  const int64_t C = 32, V = 100, ctx = 16;
  std::map<std::string, std::vector<int64_t>> want = {
      {"wte.weight", {V, C}}, {"wpe.weight", {ctx, C}}, {"ln_f.weight", {C}}, {"ln_f.bias", {C}}};
  for (int l = 0; l < 2; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    want[h + "ln_1.weight"] = {C};
    want[h + "ln_1.bias"] = {C};
    want[h + "attn.c_attn.weight"] = {C, 3 * C};
    want[h + "attn.c_attn.bias"] = {3 * C};
    want[h + "attn.c_proj.weight"] = {C, C};
    want[h + "attn.c_proj.bias"] = {C};
    want[h + "ln_2.weight"] = {C};
    want[h + "ln_2.bias"] = {C};
    want[h + "mlp.c_fc.weight"] = {C, 4 * C};
    want[h + "mlp.c_fc.bias"] = {4 * C};
    want[h + "mlp.c_proj.weight"] = {4 * C, C};
    want[h + "mlp.c_proj.bias"] = {C};
  }
  ASSERT_EQ(st.size(), want.size());
  for (const auto& [name, shape] : want) {
    ASSERT_TRUE(st.count(name)) << name;
    EXPECT_EQ(st.at(name).shape, shape) << name;
  }
  // Every tensor, value for value (the fixture perturbed each off its initial
  // value): GPT-2's Conv1D weights are ours transposed, theirs[i][o] == ours[o][i];
  // wte holds our real vocabulary rows.
  expect_every_tensor_distinct(s.model);
  size_t n_compared = 0;
  for (const auto& p : s.model.param_table()) {
    const St& t = st.at(p.name);
    const float* ours = s.st.params.data() + p.offset;
    if (p.shape.size() == 2 && p.name != "wte.weight" && p.name != "wpe.weight") {
      const int64_t in = t.shape[0], outd = t.shape[1];
      ASSERT_EQ(p.shape, (std::vector<int64_t>{outd, in})) << p.name;
      for (int64_t i = 0; i < in; ++i)
        for (int64_t o = 0; o < outd; ++o)
          ASSERT_EQ(t.data[i * outd + o], ours[o * in + i]) << p.name << " " << i << "," << o;
    } else {
      ASSERT_EQ(std::memcmp(t.data.data(), ours, t.data.size() * sizeof(float)), 0) << p.name;
    }
    ++n_compared;
  }
  ASSERT_EQ(n_compared, want.size());
  std::ifstream cin(out + "/config.json");
  const json cfg = json::parse(cin);
  EXPECT_EQ(cfg.at("model_type"), "gpt2");
  EXPECT_EQ(cfg.at("n_layer"), 2);
  EXPECT_EQ(cfg.at("n_embd"), 32);
  EXPECT_EQ(cfg.at("n_head"), 4);
  EXPECT_EQ(cfg.at("vocab_size"), 100);
  EXPECT_EQ(cfg.at("n_positions"), 16);
  EXPECT_EQ(cfg.at("activation_function"), "gelu_new");
  EXPECT_EQ(cfg.at("eos_token_id"), 99);
}

TEST(Export, SafetensorsInBf16HoldsTheRoundedMasters) {
  TempDir tmp("export");
  TinyState s;
  const std::string ckpt = s.save(tmp / "run").path;
  chorus::checkpoint::export_safetensors(ckpt, tmp / "f32");
  chorus::checkpoint::export_safetensors(ckpt, tmp / "bf16", chorus::Precision::bf16);
  json h32, h16;
  const auto a = read_safetensors((tmp / "f32") + "/model.safetensors", &h32);
  const auto b = read_safetensors((tmp / "bf16") + "/model.safetensors", &h16);
  ASSERT_EQ(a.size(), b.size());
  size_t changed = 0;
  for (const auto& [name, t] : a) {
    EXPECT_EQ(h16.at(name).at("dtype"), "BF16") << name;
    ASSERT_EQ(b.at(name).shape, t.shape) << name;
    for (size_t i = 0; i < t.data.size(); ++i) {
      ASSERT_EQ(b.at(name).data[i], chorus::round_to<chorus::bf16>(t.data[i])) << name << "[" << i << "]";
      changed += b.at(name).data[i] != t.data[i];
    }
  }
  EXPECT_GT(changed, 0u) << "the bf16 file must really be rounded";
  EXPECT_LT(std::filesystem::file_size((tmp / "bf16") + "/model.safetensors"),
            std::filesystem::file_size((tmp / "f32") + "/model.safetensors") * 6 / 10);
}

TEST(Export, PyTorchLoadsTheSafetensorsAndComputesChorusLogits) {
  int code = -1;
  run("/usr/bin/python3 -c 'import torch' 2>&1", &code);
  if (code != 0) GTEST_SKIP() << "/usr/bin/python3 with torch is not available";
  TempDir tmp("export");
  TinyState s;
  const std::string ckpt = s.save(tmp / "run").path;
  const std::string out = tmp / "hf";
  chorus::checkpoint::export_safetensors(ckpt, out);
  const std::vector<int32_t> toks = {3, 97, 14, 15, 92, 65, 35, 0, 99, 42};
  std::string csv;
  for (auto t : toks) csv += chorus::strfmt(csv.empty() ? "%d" : ",%d", t);
  const std::string script = std::string(CHORUS_SOURCE_DIR) + "/tests/checkpoint/gpt2_safetensors_check.py";
  const std::string text =
      run("OMP_NUM_THREADS=1 /usr/bin/python3 " + script + " " + out + " " + csv + " 2>&1", &code);
  ASSERT_EQ(code, 0) << text;
  const json j = json::parse(text.substr(text.find('{')));
  std::printf("[ export  ] loaded by PyTorch via %s\n", j.at("loader").get<std::string>().c_str());
  EXPECT_EQ(j.at("shapes").at("h.0.attn.c_attn.weight"), (std::vector<int64_t>{32, 96}));
  const auto& logits = j.at("logits");
  ASSERT_EQ(logits.size(), toks.size());

  const int T = static_cast<int>(toks.size());
  chorus::models::Gpt g(tiny_config(), 1, T);
  std::copy(s.st.params.begin(), s.st.params.end(), g.params().begin());
  g.forward(toks.data(), nullptr, 1, T);
  const float* ours = g.logits();
  const int Vp = tiny_config().padded_vocab(), V = tiny_config().vocab_size;
  double worst = 0, scale = 0;
  for (int t = 0; t < T; ++t) {
    ASSERT_EQ(logits[t].size(), static_cast<size_t>(V));
    for (int v = 0; v < V; ++v) {
      const double theirs = logits[t][v].get<double>();
      worst = std::max(worst, std::fabs(theirs - ours[t * Vp + v]));
      scale = std::max(scale, std::fabs(theirs));
    }
  }
  std::printf("[ export  ] max |logit difference| %.2e (max |logit| %.2e)\n", worst, scale);
  EXPECT_LT(worst, 1e-4 * std::max(1.0, scale));
}
