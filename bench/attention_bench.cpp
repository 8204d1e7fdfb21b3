// Causal self-attention, forward + backward: the kernel that saves the
// (B, NH, T, T) probabilities (nn/attention.h) against the tiled flash kernel
// that saves only the (B, NH, T) log-sum-exp (nn/flash_attention.h), on
// gpt-mini-like shapes (C 384, NH 6, B * T = 2048 tokens) at T = 256 ... 2048.
// Prints milliseconds (best of a few interleaved runs) and the bytes each keeps for
// backward beyond qkv and out.
//
// Run: cmake --build build --target attention_bench
//      OMP_NUM_THREADS=2 build/bin/attention_bench [bf16] [T ...]   (default float, T = 256 512 1024 2048)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/dtype.h"
#include "nn/attention.h"
#include "nn/flash_attention.h"

using namespace chorus;
using namespace chorus::nn;

namespace {

double ms_of(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3;
}

// Best wall time in ms of each of fs: one warm-up each, then rounds that run
// them in turn (so a change of load on a shared machine hits all alike), at
// least 3 rounds and ~min_secs in all.
std::vector<double> best_ms(const std::vector<std::function<void()>>& fs, double min_secs = 1.0) {
  for (const auto& f : fs) f();
  std::vector<double> best(fs.size(), 1e30);
  double spent = 0.0;
  for (int n = 0; n < 3 || spent < min_secs * 1e3; ++n)
    for (size_t i = 0; i < fs.size(); ++i) {
      const double ms = ms_of(fs[i]);
      best[i] = std::min(best[i], ms);
      spent += ms;
    }
  return best;
}

template <typename T>
std::vector<T> random_t(size_t n, unsigned seed, float scale) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = from_f32<T>(u(g));
  return v;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0.0, m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
    m = std::max(m, std::abs(static_cast<double>(b[i])));
  }
  return d / std::max(m, 1e-30);
}

template <typename T>
std::vector<float> widen(const std::vector<T>& t) {
  std::vector<float> v(t.size());
  convert(v.data(), t.data(), t.size());
  return v;
}

template <typename T>
void run(const char* dtype, const std::vector<int>& Ts) {
  const int C = 384, NH = 6, tokens = 2048;
  std::printf("dtype %s, C %d, NH %d, B*T = %d tokens, %d threads\n", dtype, C, NH, tokens,
              backend::cpu::n_threads());
  std::printf("%5s %3s | %9s %9s %9s | %9s %9s %9s | %7s | %12s %12s | %9s\n", "T", "B", "attn fwd",
              "attn bwd", "attn sum", "flash fwd", "flash bwd", "flash sum", "speedup", "attn keeps",
              "flash keeps", "max diff");
  for (int Tn : Ts) {
    const int B = std::max(1, tokens / Tn);
    const size_t n_qkv = static_cast<size_t>(B) * Tn * 3 * C, n_out = static_cast<size_t>(B) * Tn * C;
    const size_t n_att = static_cast<size_t>(B) * NH * Tn * Tn, n_lse = static_cast<size_t>(B) * NH * Tn;
    const auto qkv = random_t<T>(n_qkv, 1, 1.0f), dout = random_t<T>(n_out, 2, 0.1f);
    std::vector<T> out(n_out), att(n_att), dqkv(n_qkv), out_f(n_out), dqkv_f(n_qkv);
    std::vector<float> lse(n_lse);

    const std::vector<double> ms = best_ms({
        [&] { flash_attention_forward(out_f.data(), lse.data(), qkv.data(), B, Tn, C, NH); },
        [&] {
          flash_attention_backward(dqkv_f.data(), dout.data(), qkv.data(), out_f.data(), lse.data(), B, Tn, C,
                                   NH);
        },
        [&] { attention_forward(out.data(), att.data(), qkv.data(), B, Tn, C, NH); },
        [&] { attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, Tn, C, NH); },
    });
    const double ff = ms[0], fb = ms[1], af = ms[2], ab = ms[3];
    const double diff =
        std::max(max_rel_diff(widen(out_f), widen(out)), max_rel_diff(widen(dqkv_f), widen(dqkv)));
    std::printf("%5d %3d | %9.2f %9.2f %9.2f | %9.2f %9.2f %9.2f | %6.2fx | %9.1f MB %9.3f MB | %9.1e\n", Tn,
                B, af, ab, af + ab, ff, fb, ff + fb, (af + ab) / (ff + fb), n_att * sizeof(T) / 1e6,
                n_lse * sizeof(float) / 1e6, diff);
  }
  std::printf(
      "(ms, best of >= 3 interleaved runs; keeps = saved for backward beyond qkv and out: att (B, NH, T, T) "
      "in %s vs lse (B, NH, T) fp32; max diff = relative-to-max difference of out and dqkv)\n",
      dtype);
}

}  // namespace

int main(int argc, char** argv) {
  bool bf = false;
  std::vector<int> Ts;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "bf16") == 0)
      bf = true;
    else
      Ts.push_back(std::atoi(argv[i]));
  }
  if (Ts.empty()) Ts = {256, 512, 1024, 2048};
  if (bf)
    run<bf16>("bf16", Ts);
  else
    run<float>("float", Ts);
  // The whole model: one saved tensor per layer.
  const double L = 12, B = 8, NH = 12, Tn = 1024;
  std::printf("gpt2-124M (L 12, NH 12) at B 8 x T 1024, fp32: probabilities %.2f GB vs lse %.1f MB\n",
              L * B * NH * Tn * Tn * 4 / 1e9, L * B * NH * Tn * 4 / 1e6);
  return 0;
}
