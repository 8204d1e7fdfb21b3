// Shared set-up for the checkpoint unit tests: a temporary directory and a
// tiny GPT's training state (weights + non-trivial Adam moments) held by one
// process (a world of one).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/rng.h"
#include "models/gpt/gpt.h"

namespace ckpt_test {

namespace fs = std::filesystem;
using namespace chorus;

inline models::GptConfig tiny_config() {
  models::GptConfig c;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.vocab_size = 100;  // padded to 128: divisible by TP 2 and 4
  c.context = 16;
  return c;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("chorus_" + tag + "_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& s) const { return (path / s).string(); }
};

// Every tensor of m holds more than one value: a tensor dropped, swapped with
// another of its shape or left at its initial ones / zeros by a save, load or
// export cannot go unnoticed by a test that compares the tensors.
inline void expect_every_tensor_distinct(models::Gpt& m) {
  const auto params = m.params();
  for (const auto& t : m.param_table()) {
    const float* p = params.data() + t.offset;
    size_t n_equal = 0;
    for (size_t i = 1; i < t.numel; ++i) n_equal += p[i] == p[0];
    EXPECT_LT(n_equal, t.numel / 2) << t.name << " is (nearly) constant";
  }
}

// A model plus optimizer state for one rank of TP 1 / DP 1. Every weight is
// perturbed off its initial value (LayerNorm gains and all biases included).
struct TinyState {
  models::Gpt model{tiny_config(), 1, 4};
  std::vector<float> m, v;
  checkpoint::RankState st;
  checkpoint::Manifest meta;
  std::string tok_hash = std::string(64, 'a');

  explicit TinyState(uint64_t seed = 5) {
    model.init_weights(seed);
    const size_t n = model.n_params();
    Rng noise(seed, 7);
    for (const auto& t : model.param_table()) {  // wte's padding rows stay zero
      const size_t n_real =
          t.name == "wte.weight" ? size_t(tiny_config().vocab_size * tiny_config().n_embd) : t.numel;
      for (size_t i = 0; i < n_real; ++i) model.params()[t.offset + i] += 0.05f * noise.normal();
    }
    m.resize(n);
    v.resize(n);
    Rng rng(seed, 99);
    for (size_t i = 0; i < n; ++i) {
      m[i] = 1e-3f * rng.normal();
      v[i] = m[i] * m[i] + 1e-9f;
    }
    st.tensors = checkpoint::tensor_table(model);
    for (const auto& p : model.param_table()) st.offsets.push_back(p.offset);
    st.params = model.params();
    st.opt_range = {0, n};
    st.exp_avg = m;
    st.exp_avg_sq = v;
    st.rng = Rng(seed, 1000).state();
    meta.model = tiny_config();
    meta.tokenizer_hash = tok_hash;
    meta.eot_token = 99;
    meta.step = 3;
    meta.tokens_seen = 3 * 64;
    meta.sampler = {24, seed, 8, 8};
    meta.schedule = {3, 1e-2f, 1e-3f, 2, 10};
    meta.optimizer.t = 3;
    meta.optimizer.beta1 = 0.9f;
    meta.optimizer.beta2 = 0.95f;
    meta.optimizer.eps = 1e-8f;
    meta.optimizer.weight_decay = 0.1f;
    meta.optimizer.grad_clip = 1.0f;
    meta.run = {{"test", true}};
  }

  checkpoint::SaveResult save(const std::string& dir, int64_t step = 3, int keep_last = 0) {
    dist::ParallelGrid grid = dist::ParallelGrid::single();
    checkpoint::Manifest mm = meta;
    mm.step = step;
    return checkpoint::save_checkpoint(grid, dir, mm, st, keep_last);
  }
};

// Buffers to load into, shaped like TinyState's.
struct LoadTarget {
  std::vector<float> p, m, v;
  checkpoint::RankState st;
  explicit LoadTarget(const TinyState& like) {
    p.assign(like.st.params.size(), -1.0f);
    m.assign(like.m.size(), -1.0f);
    v.assign(like.v.size(), -1.0f);
    st = like.st;
    st.params = p;
    st.exp_avg = m;
    st.exp_avg_sq = v;
    st.rng = {};
  }
  checkpoint::LoadResult load(const std::string& dir, const std::string& tok_hash) {
    dist::ParallelGrid grid = dist::ParallelGrid::single();
    return checkpoint::load_checkpoint(grid, dir, 0, tiny_config(), tok_hash, st);
  }
};

inline bool same_floats(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c ^= 0x10;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

// Runs f, expecting an exception whose message contains every needle.
template <class E, class F>
std::string expect_throw_with(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& n : needles)
      EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' not in: " << what;
    return what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return "";
}

}  // namespace ckpt_test
