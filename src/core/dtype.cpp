#include "core/dtype.h"

#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "core/error.h"

namespace chorus {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
  }
  return "?";
}

Precision parse_precision(const std::string& s, const char* field) {
  if (s == "fp32" || s == "float32") return Precision::fp32;
  if (s == "bf16" || s == "bfloat16") return Precision::bf16;
  if (s == "fp16" || s == "float16") return Precision::fp16;
  throw Error(strfmt("%s: expected fp32, bf16 or fp16, got '%s'", field, s.c_str()));
}

namespace {

// Below this many elements a conversion runs on the calling thread.
constexpr size_t kParallelMin = 1 << 16;
constexpr long kChunk = 1 << 14;  // elements per OpenMP chunk (a multiple of every vector width)

// Runs body(begin, end) over [0, n) in fixed chunks, in parallel when n is large.
template <typename Body>
void chunked(size_t n, Body body) {
  const long nn = static_cast<long>(n);
  const long n_chunks = (nn + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (long c = 0; c < n_chunks; ++c) {
    const long b = c * kChunk;
    body(static_cast<size_t>(b), static_cast<size_t>(b + kChunk < nn ? b + kChunk : nn));
  }
}

// Plain loops GCC vectorises (shifts, adds and selects on 32-bit lanes).
void bf16_to_f32_range(float* dst, const uint16_t* src, size_t b, size_t e) {
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
#pragma omp simd
  for (size_t i = b; i < e; ++i) d[i] = static_cast<uint32_t>(src[i]) << 16;
}

void f32_to_bf16_range(uint16_t* dst, const float* src, size_t b, size_t e) {
  const uint32_t* s = reinterpret_cast<const uint32_t*>(src);
#pragma omp simd
  for (size_t i = b; i < e; ++i) {
    const uint32_t x = s[i];
    const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    const uint32_t nan = (x >> 16) | 0x0040u;
    dst[i] = static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
  }
}

void fp16_to_f32_scalar(float* dst, const uint16_t* src, size_t b, size_t e) {
  for (size_t i = b; i < e; ++i) dst[i] = fp16_bits_to_f32(src[i]);
}
void f32_to_fp16_scalar(uint16_t* dst, const float* src, size_t b, size_t e) {
  for (size_t i = b; i < e; ++i) dst[i] = f32_to_fp16_bits(src[i]);
}

// F16C: vcvtph2ps is exact; vcvtps2ph with round-to-nearest-even matches
// f32_to_fp16_bits bit for bit (Inf on overflow, subnormals, quiet NaN with
// the top payload bits), independent of MXCSR's flush-to-zero bits.
__attribute__((target("avx,f16c"))) void fp16_to_f32_f16c(float* dst, const uint16_t* src, size_t b, size_t e) {
  size_t i = b;
  for (; i + 8 <= e; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  fp16_to_f32_scalar(dst, src, i, e);
}
__attribute__((target("avx,f16c"))) void f32_to_fp16_f16c(uint16_t* dst, const float* src, size_t b, size_t e) {
  size_t i = b;
  for (; i + 8 <= e; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  f32_to_fp16_scalar(dst, src, i, e);
}

bool detect_f16c() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
  return false;
#endif
}

}  // namespace

namespace {
// The uint16_t words of a bf16 / fp16 array (each struct is its one member).
// Not &p->bits: for an empty array p may be null, and member access through a
// null pointer is undefined behaviour (found by UBSan, tests/sanitize).
template <class H>
auto* bits_of(H* p) {
  using Bits = std::conditional_t<std::is_const_v<H>, const uint16_t, uint16_t>;
  return reinterpret_cast<Bits*>(p);
}
}  // namespace

bool f16c_available() {
  static const bool yes = detect_f16c();
  return yes;
}

void convert(float* dst, const bf16* src, size_t n) {
  const uint16_t* s = bits_of(src);
  chunked(n, [&](size_t b, size_t e) { bf16_to_f32_range(dst, s, b, e); });
}

void convert(bf16* dst, const float* src, size_t n) {
  uint16_t* d = bits_of(dst);
  chunked(n, [&](size_t b, size_t e) { f32_to_bf16_range(d, src, b, e); });
}

void convert(float* dst, const fp16* src, size_t n) {
  const uint16_t* s = bits_of(src);
  const bool hw = f16c_available();
  chunked(n, [&](size_t b, size_t e) { hw ? fp16_to_f32_f16c(dst, s, b, e) : fp16_to_f32_scalar(dst, s, b, e); });
}

void convert(fp16* dst, const float* src, size_t n) {
  uint16_t* d = bits_of(dst);
  const bool hw = f16c_available();
  chunked(n, [&](size_t b, size_t e) { hw ? f32_to_fp16_f16c(d, src, b, e) : f32_to_fp16_scalar(d, src, b, e); });
}

void convert(float* dst, const float* src, size_t n) {
  if (dst == src || n == 0) return;
  chunked(n, [&](size_t b, size_t e) { std::memcpy(dst + b, src + b, (e - b) * sizeof(float)); });
}

void convert_serial(float* dst, const bf16* src, size_t n) { bf16_to_f32_range(dst, bits_of(src), 0, n); }
void convert_serial(bf16* dst, const float* src, size_t n) { f32_to_bf16_range(bits_of(dst), src, 0, n); }
void convert_serial(float* dst, const fp16* src, size_t n) {
  f16c_available() ? fp16_to_f32_f16c(dst, bits_of(src), 0, n) : fp16_to_f32_scalar(dst, bits_of(src), 0, n);
}
void convert_serial(fp16* dst, const float* src, size_t n) {
  f16c_available() ? f32_to_fp16_f16c(bits_of(dst), src, 0, n) : f32_to_fp16_scalar(bits_of(dst), src, 0, n);
}
void convert_serial(float* dst, const float* src, size_t n) {
  if (dst != src && n > 0) std::memmove(dst, src, n * sizeof(float));
}

}  // namespace chorus
