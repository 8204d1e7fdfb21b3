#include "nn/ctc.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "backend/cpu/vmath.h"
#include "core/error.h"
#include "nn/typed.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// log(e^a + e^b), exact for -inf operands.
inline double log_add(double a, double b) {
  if (a < b) std::swap(a, b);
  if (b == kNegInf) return a;
  return a + std::log1p(std::exp(b - a));
}

// This thread's grow-only buffer of at least n doubles.
double* double_scratch(size_t n) {
  thread_local std::vector<double> buf;
  if (buf.size() < n) {
    buf.clear();
    buf.shrink_to_fit();  // free first: peak memory is the new size, not both
    buf.resize(n + n / 8);
  }
  return buf.data();
}

// The extended label sequence l' of a target: blank, l_1, blank, ..., l_L, blank.
struct Extended {
  const int32_t* lab;
  int L, blank;
  int S() const { return 2 * L + 1; }
  int32_t at(int s) const { return (s & 1) ? lab[s >> 1] : blank; }
  // Whether state s may be entered from s - 2 (skipping a blank): s is a
  // label different from the previous label.
  bool skip_into(int s) const { return (s & 1) && s >= 3 && lab[s >> 1] != lab[(s >> 1) - 1]; }
};

// Fewest frames any alignment of lab needs: one per label, plus a blank
// between each pair of equal adjacent labels.
int min_frames(const int32_t* lab, int L) {
  int n = L;
  for (int i = 1; i < L; ++i) n += lab[i] == lab[i - 1];
  return n;
}

// One item: returns the loss; writes the Tmax rows of dl (if not null).
template <typename T>
float ctc_item(T* dl, const T* lg, int Tn, int Tmax, int V, const Extended& e, float scale, bool* infeasible) {
  auto zero_rows = [&](int t0) {
    if (dl != nullptr)
      std::fill(dl + static_cast<size_t>(t0) * V, dl + static_cast<size_t>(Tmax) * V, from_f32<T>(0.0f));
  };
  *infeasible = Tn < min_frames(e.lab, e.L);
  if (*infeasible) {
    zero_rows(0);
    return std::numeric_limits<float>::infinity();
  }
  if (Tn == 0) {  // empty target, no frames: p = 1
    zero_rows(0);
    return 0.0f;
  }
  const int S = e.S();
  const size_t TS = static_cast<size_t>(Tn) * S;
  double* lp = double_scratch(3 * TS + Tn);  // (Tn, S) log y_t(l'_s)
  double* alpha = lp + TS;                   // (Tn, S), frame t included
  double* beta = alpha + TS;                 // (Tn, S), frames after t only
  double* lse = beta + TS;                   // (Tn) log-softmax normaliser
  float* row_buf = cpu::thread_scratch(cpu::kScratchRowIn, V);
  for (int t = 0; t < Tn; ++t) {
    const float* row = f32_rows(lg + static_cast<size_t>(t) * V, 1, V, V, row_buf).p;
    const float mx = cpu::max_of(row, V);
    lse[t] = mx + std::log(static_cast<double>(cpu::sum_exp(row, V, mx)));
    for (int s = 0; s < S; ++s) lp[static_cast<size_t>(t) * S + s] = row[e.at(s)] - lse[t];
  }

  // alpha_t(s) = y_t(l'_s) * (alpha_{t-1}(s) + alpha_{t-1}(s-1) [+ alpha_{t-1}(s-2)]) (eq. 6-7)
  std::fill(alpha, alpha + S, kNegInf);
  alpha[0] = lp[0];
  if (S > 1) alpha[1] = lp[1];
  for (int t = 1; t < Tn; ++t) {
    const double* prev = alpha + static_cast<size_t>(t - 1) * S;
    double* cur = alpha + static_cast<size_t>(t) * S;
    for (int s = 0; s < S; ++s) {
      double a = prev[s];
      if (s >= 1) a = log_add(a, prev[s - 1]);
      if (e.skip_into(s)) a = log_add(a, prev[s - 2]);
      cur[s] = a + lp[static_cast<size_t>(t) * S + s];
    }
  }
  const double* last = alpha + static_cast<size_t>(Tn - 1) * S;
  const double log_p = log_add(last[S - 1], S > 1 ? last[S - 2] : kNegInf);
  if (!std::isfinite(log_p)) {  // cannot happen with finite logits; kept as a guard
    *infeasible = true;
    zero_rows(0);
    return std::numeric_limits<float>::infinity();
  }
  if (dl == nullptr) return static_cast<float>(-log_p);

  // beta_t(s): the paths from state s at frame t to the end, frames > t (eq. 10-11)
  double* bl = beta + static_cast<size_t>(Tn - 1) * S;
  for (int s = 0; s < S; ++s) bl[s] = s >= S - 2 ? 0.0 : kNegInf;
  for (int t = Tn - 2; t >= 0; --t) {
    const double* nb = beta + static_cast<size_t>(t + 1) * S;
    const double* nl = lp + static_cast<size_t>(t + 1) * S;
    double* cur = beta + static_cast<size_t>(t) * S;
    for (int s = 0; s < S; ++s) {
      double b = nb[s] + nl[s];
      if (s + 1 < S) b = log_add(b, nb[s + 1] + nl[s + 1]);
      if (s + 2 < S && e.skip_into(s + 2)) b = log_add(b, nb[s + 2] + nl[s + 2]);
      cur[s] = b;
    }
  }

  // d loss / d u_t(v) = y_t(v) - sum_{s: l'_s = v} exp(alpha_t(s) + beta_t(s) - log p)  (eq. 16)
  float* d_buf = cpu::thread_scratch(cpu::kScratchRowOut, V);
  for (int t = 0; t < Tn; ++t) {
    T* d_t = dl + static_cast<size_t>(t) * V;
    const float* row = f32_rows(lg + static_cast<size_t>(t) * V, 1, V, V, row_buf).p;
    float* d = kIsF32<T> ? reinterpret_cast<float*>(d_t) : d_buf;
    cpu::exp_store_scaled(d, row, V, static_cast<float>(lse[t]), scale);  // d may alias row
    const double* a = alpha + static_cast<size_t>(t) * S;
    const double* b = beta + static_cast<size_t>(t) * S;
    for (int s = 0; s < S; ++s) d[e.at(s)] -= scale * static_cast<float>(std::exp(a[s] + b[s] - log_p));
    store_rows(d_t, V, d, V, 1, V);
  }
  zero_rows(Tn);
  return static_cast<float>(-log_p);
}

}  // namespace

template <typename T>
int ctc_loss(float* losses, T* dlogits, const T* logits, const int* in_len, const int32_t* targets,
             const int* tgt_off, const int* tgt_len, const float* grad_scale, int B, int Tmax, int V, int blank) {
  CHORUS_CHECK(B >= 0 && Tmax >= 0 && V >= 2, "ctc_loss: B=%d Tmax=%d V=%d: expected V >= 2", B, Tmax, V);
  CHORUS_CHECK(blank >= 0 && blank < V, "ctc_loss: blank = %d, expected in [0, V=%d)", blank, V);
  for (int b = 0; b < B; ++b) {
    CHORUS_CHECK(in_len[b] >= 0 && in_len[b] <= Tmax, "ctc_loss: in_len[%d] = %d, expected in [0, Tmax=%d]", b,
                 in_len[b], Tmax);
    CHORUS_CHECK(tgt_len[b] >= 0 && tgt_off[b] >= 0, "ctc_loss: item %d: tgt_len %d, tgt_off %d, expected >= 0", b,
                 tgt_len[b], tgt_off[b]);
    const int32_t* lab = targets + tgt_off[b];
    for (int i = 0; i < tgt_len[b]; ++i)
      CHORUS_CHECK(lab[i] >= 0 && lab[i] < V && lab[i] != blank,
                   "ctc_loss: item %d label %d = %d, expected in [0, V=%d) and != blank %d", b, i, lab[i], V, blank);
  }
  const size_t item = static_cast<size_t>(Tmax) * V;
  int n_infeasible = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : n_infeasible)
  for (int b = 0; b < B; ++b) {
    const Extended e{targets + tgt_off[b], tgt_len[b], blank};
    const float scale = grad_scale != nullptr ? grad_scale[b] : 1.0f;
    bool bad = false;
    losses[b] = ctc_item(dlogits != nullptr ? dlogits + b * item : nullptr, logits + b * item, in_len[b], Tmax, V,
                         e, scale, &bad);
    n_infeasible += bad;
  }
  return n_infeasible;
}

template int ctc_loss<float>(float*, float*, const float*, const int*, const int32_t*, const int*, const int*,
                             const float*, int, int, int, int);
template int ctc_loss<bf16>(float*, bf16*, const bf16*, const int*, const int32_t*, const int*, const int*,
                            const float*, int, int, int, int);
template int ctc_loss<fp16>(float*, fp16*, const fp16*, const int*, const int32_t*, const int*, const int*,
                            const float*, int, int, int, int);

double ctc_log_likelihood(const float* log_probs, int Tn, int V, const int32_t* target, int n, int blank) {
  CHORUS_CHECK(Tn >= 0 && n >= 0 && blank >= 0 && blank < V,
               "ctc_log_likelihood: Tn=%d n=%d blank=%d V=%d: expected sizes >= 0 and blank in [0, V)", Tn, n, blank,
               V);
  for (int i = 0; i < n; ++i)
    CHORUS_CHECK(target[i] >= 0 && target[i] < V && target[i] != blank,
                 "ctc_log_likelihood: label %d = %d, expected in [0, V=%d) and != blank %d", i, target[i], V, blank);
  if (Tn < min_frames(target, n)) return kNegInf;
  if (Tn == 0) return 0.0;
  const Extended e{target, n, blank};
  const int S = e.S();
  double* prev = double_scratch(2 * static_cast<size_t>(S));
  double* cur = prev + S;
  std::fill(prev, prev + S, kNegInf);
  prev[0] = log_probs[blank];
  if (S > 1) prev[1] = log_probs[target[0]];
  for (int t = 1; t < Tn; ++t) {
    const float* lp = log_probs + static_cast<size_t>(t) * V;
    for (int s = 0; s < S; ++s) {
      double a = prev[s];
      if (s >= 1) a = log_add(a, prev[s - 1]);
      if (e.skip_into(s)) a = log_add(a, prev[s - 2]);
      cur[s] = a + lp[e.at(s)];
    }
    std::swap(prev, cur);
  }
  return log_add(prev[S - 1], S > 1 ? prev[S - 2] : kNegInf);
}

std::vector<int32_t> ctc_greedy(const float* logits, int Tn, int V, int blank) {
  std::vector<int32_t> out;
  int32_t prev = -1;
  for (int t = 0; t < Tn; ++t) {
    const float* row = logits + static_cast<size_t>(t) * V;
    const int32_t best = static_cast<int32_t>(std::max_element(row, row + V) - row);
    if (best != prev && best != blank) out.push_back(best);
    prev = best;
  }
  return out;
}

static double prefix_log_add(double a, double b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  return std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
}


CtcPrefix ctc_prefix_root(const float* lp, int T, int V, int blank) {
  CtcPrefix r;
  r.rn.assign(T, -INFINITY);
  r.rb.resize(T);
  double acc = 0.0;
  for (int t = 0; t < T; ++t) r.rb[t] = acc += lp[static_cast<size_t>(t) * V + blank];
  return r;
}

CtcPrefix ctc_prefix_extend(const CtcPrefix& h, int c, const float* lp, int T, int V, int blank) {
  CtcPrefix g;
  g.rn.resize(T);
  g.rb.resize(T);
  g.root = false;
  g.last = c;
  g.rn[0] = h.root ? lp[c] : -INFINITY;
  g.rb[0] = -INFINITY;
  double psi = g.rn[0];
  for (int t = 1; t < T; ++t) {
    const double phi = c == h.last ? h.rb[t - 1] : prefix_log_add(h.rb[t - 1], h.rn[t - 1]);
    const double y = lp[static_cast<size_t>(t) * V + c];
    g.rn[t] = prefix_log_add(g.rn[t - 1], phi) + y;
    g.rb[t] = prefix_log_add(g.rb[t - 1], g.rn[t - 1]) + lp[static_cast<size_t>(t) * V + blank];
    psi = prefix_log_add(psi, phi + y);
  }
  g.score = psi;
  return g;
}

double ctc_prefix_final(const CtcPrefix& h) { return prefix_log_add(h.rn.back(), h.rb.back()); }

void ctc_alignment_prior(const CtcPrefix& h, int window, float floor, int pool, float* out) {
  const int T = static_cast<int>(h.rn.size());
  CHORUS_CHECK(window >= 0 && floor > 0.0f && pool >= 1 && static_cast<int>(h.rb.size()) == T,
               "ctc_alignment_prior: window %d must be >= 0, floor %g > 0 and pool %d >= 1", window,
               static_cast<double>(floor), pool);
  const int rows = (T + pool - 1) / pool;
  double mx = -INFINITY;
  std::vector<double> pi(T);
  for (int t = 0; t < T; ++t) mx = std::max(mx, pi[t] = prefix_log_add(h.rn[t], h.rb[t]));
  if (mx == -INFINITY) {
    std::fill(out, out + rows, 0.0f);
    return;
  }
  double z = 0.0;
  for (double& p : pi) z += p = std::exp(p - mx);
  // prior(t) = sum of pi over [t - window, t] (a running sum), averaged per row of pool frames
  double run = 0.0, row = 0.0;
  for (int t = 0; t < T; ++t) {
    run += pi[t];
    if (t - window - 1 >= 0) run -= pi[t - window - 1];
    row += std::max(0.0, run) / z;
    if ((t + 1) % pool == 0 || t == T - 1) {
      const int n = t % pool + 1;
      out[t / pool] = static_cast<float>(std::log(row / n + floor));
      row = 0.0;
    }
  }
}


}  // namespace chorus::nn
