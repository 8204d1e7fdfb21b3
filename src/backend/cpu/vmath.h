// Vectorised float math for the softmax, cross-entropy and GELU hot loops.
// glibc's expf does not vectorise without -ffast-math (which we do not use),
// and GCC's default 256-bit preference leaves half of AVX-512 unused, so the
// loops here use GCC/Clang vector extensions at the widest width the target
// has (16 lanes with AVX-512, 8 with AVX, else 4), with scalar tails.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace chorus::backend::cpu {

#if defined(__AVX512F__)
inline constexpr int kLanes = 16;
#elif defined(__AVX__)
inline constexpr int kLanes = 8;
#else
inline constexpr int kLanes = 4;
#endif

using VecF = float __attribute__((vector_size(kLanes * sizeof(float))));
using VecI = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline VecF load(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, VecF v) { std::memcpy(p, &v, sizeof(v)); }
inline VecF splat(float x) { return x - VecF{}; }
inline float hsum(VecF v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}
inline float hmax(VecF v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// e^x, within ~2 ulp of expf on [-87.3, 88.3]; below that range it returns 0
// (no denormals, e^-inf = 0), above it e^88.3. Range reduction
// x = n ln2 + r with a two-part ln2 and the degree-6 polynomial of Cephes
// expf (S. Moshier, cephes/single/expf.c). The vector version runs the same
// operations lane by lane.
inline float exp_approx(float x) {
  const bool underflow = x < -87.3f;
  x = underflow ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  // round(x / ln2) by the 1.5 * 2^23 trick (exact for |v| < 2^22)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  return underflow ? 0.0f : p * std::bit_cast<float>(bits);
}

inline VecF exp_approx(VecF x) {
  const VecF lo = splat(-87.3f), hi = splat(88.3f);
  const auto underflow = x < lo;
  x = underflow ? lo : x;
  x = x > hi ? hi : x;
  const VecF magic = splat(12582912.0f);
  const VecF n = (x * 1.44269504088896341f + magic) - magic;
  const VecF r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  VecF p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const VecI bits = (__builtin_convertvector(n, VecI) + 127) << 23;
  return underflow ? VecF{} : p * std::bit_cast<VecF>(bits);
}

// max of x[0, n), n >= 1.
inline float max_of(const float* x, int n) {
  int i = 0;
  float m = x[0];
  if (n >= kLanes) {
    VecF vm = load(x);
    for (i = kLanes; i + kLanes <= n; i += kLanes) {
      const VecF v = load(x + i);
      vm = v > vm ? v : vm;
    }
    m = hmax(vm);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// sum of exp(x[i] - shift), i < n.
inline float sum_exp(const float* x, int n, float shift) {
  VecF acc{};
  const VecF s = splat(shift);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) acc += exp_approx(load(x + i) - s);
  float tail = 0.0f;
  for (; i < n; ++i) tail += exp_approx(x[i] - shift);
  return hsum(acc) + tail;
}

// y[i] = exp(x[i] - shift) for i < n (y may alias x); returns their sum.
inline float exp_store_sum(float* y, const float* x, int n, float shift) {
  VecF acc{};
  const VecF s = splat(shift);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const VecF e = exp_approx(load(x + i) - s);
    store(y + i, e);
    acc += e;
  }
  float tail = 0.0f;
  for (; i < n; ++i) {
    y[i] = exp_approx(x[i] - shift);
    tail += y[i];
  }
  return hsum(acc) + tail;
}

// y[i] = exp(x[i] - shift) * scale for i < n (y may alias x).
inline void exp_store_scaled(float* y, const float* x, int n, float shift, float scale) {
  const VecF s = splat(shift);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) store(y + i, exp_approx(load(x + i) - s) * scale);
  for (; i < n; ++i) y[i] = exp_approx(x[i] - shift) * scale;
}

// sum of a[i] * b[i], i < n.
inline float dot(const float* a, const float* b, int n) {
  VecF acc{};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) acc += load(a + i) * load(b + i);
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return hsum(acc) + tail;
}

}  // namespace chorus::backend::cpu
