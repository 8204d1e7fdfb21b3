// Storage dtypes for mixed precision: bfloat16 and IEEE binary16 (fp16), and
// the run-time precision a job trains in.
//
// Both 16-bit types are storage only: every computation loads them into fp32,
// works in fp32 and rounds once on store. Conversions from fp32 round to
// nearest, ties to even (as IEEE 754 and every GPU/CPU conversion instruction
// do), and handle the special values:
//   bf16  8-bit exponent like fp32: overflow cannot happen except by rounding
//         up from the largest finite values (then Inf); subnormals round like
//         any other value; NaN stays NaN (quiet bit set, sign and the top
//         payload bits kept: a NaN never rounds to Inf).
//   fp16  5-bit exponent: |x| >= 65520 (half-way above the largest finite
//         65504) saturates to Inf; values below 2^-14 become fp16
//         subnormals (rounded to the nearest multiple of 2^-24), below 2^-25
//         zero; NaN stays NaN as for bf16.
// fp32 <- 16-bit is exact (a signalling fp16 NaN comes out quiet, payload kept;
// bf16 -> fp32 is a plain shift and keeps NaN bits as they are).
//
// Layers are written once as templates on the storage type T in {float, bf16,
// fp16}, loading with to_f32(x) and storing with from_f32<T>(v) (identity for
// float): see docs/DESIGN.md "Mixed precision".
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>

namespace chorus {

struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2 && sizeof(fp16) == 2);

// The dtype that activations, their gradients and the compute copy of the
// weights are stored in. Master weights, gradients and optimizer state are fp32
// in every precision.
enum class Precision { fp32, bf16, fp16 };

const char* precision_name(Precision p);
// "fp32" | "bf16" | "fp16" (also "float32", "bfloat16", "float16"); throws
// chorus::Error naming `field` and the accepted values otherwise.
Precision parse_precision(const std::string& s, const char* field = "precision");
inline size_t precision_bytes(Precision p) { return p == Precision::fp32 ? 4 : 2; }

inline uint16_t f32_to_bf16_bits(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
  // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_fp16_bits(float f) {
  // After F. Giesen's float_to_half_fast3_rtne (public domain): exponent
  // rebias plus a rounding bias for normals, a float addition for subnormals.
  uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u)  // Inf or NaN
    return static_cast<uint16_t>(sign | (x > 0x7f800000u ? 0x7e00u | ((x >> 13) & 0x3ffu) : 0x7c00u));
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: rounds to Inf
  if (x < 0x38800000u) {  // below 2^-14: a subnormal or zero
    // Adding 0.5 puts the value's 2^-24 units in the low mantissa bits, and the
    // FPU's own round-to-nearest-even does the rounding.
    const float r = std::bit_cast<float>(x) + 0.5f;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(r) - 0x3f000000u));
  }
  const uint32_t odd = (x >> 13) & 1u;
  x += 0xc8000fffu + odd;  // exponent 127 -> 15 bias, + rounding bias 0xfff (+1 if odd)
  return static_cast<uint16_t>(sign | (x >> 13));
}

inline float fp16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  // Inf, or NaN with the payload kept and the quiet bit set (as vcvtph2ps does,
  // so that the F16C bulk conversion is bit-identical to this one).
  if (em == 0x7c00u) return std::bit_cast<float>(sign | 0x7f800000u);
  if (em > 0x7c00u) return std::bit_cast<float>(sign | 0x7fc00000u | ((em & 0x3ffu) << 13));
  if (em >= 0x0400u) return std::bit_cast<float>(sign | ((em << 13) + 0x38000000u));          // normal
  // Subnormal or zero: em * 2^-24, exact in fp32.
  const float v = static_cast<float>(em) * 5.9604644775390625e-8f;
  return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(v));
}

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) { return bf16_bits_to_f32(x.bits); }
inline float to_f32(fp16 x) { return fp16_bits_to_f32(x.bits); }

template <typename T>
inline T from_f32(float v);
template <>
inline float from_f32<float>(float v) {
  return v;
}
template <>
inline bf16 from_f32<bf16>(float v) {
  return bf16{f32_to_bf16_bits(v)};
}
template <>
inline fp16 from_f32<fp16>(float v) {
  return fp16{f32_to_fp16_bits(v)};
}

// The value v takes after a round trip through T (v itself for float).
template <typename T>
inline float round_to(float v) {
  return to_f32(from_f32<T>(v));
}

template <typename T>
inline constexpr Precision precision_of();
template <>
inline constexpr Precision precision_of<float>() {
  return Precision::fp32;
}
template <>
inline constexpr Precision precision_of<bf16>() {
  return Precision::bf16;
}
template <>
inline constexpr Precision precision_of<fp16>() {
  return Precision::fp16;
}

// Bulk conversions of n elements, vectorised (F16C for fp16 where the CPU has
// it, picked at run time), parallel with OpenMP for large n, bit-identical to
// the scalar functions above. dst and src must not overlap (except float ->
// float with dst == src, a no-op).
void convert(float* dst, const bf16* src, size_t n);
void convert(float* dst, const fp16* src, size_t n);
void convert(bf16* dst, const float* src, size_t n);
void convert(fp16* dst, const float* src, size_t n);
void convert(float* dst, const float* src, size_t n);

// The same on the calling thread only (no OpenMP), for rows inside parallel loops.
void convert_serial(float* dst, const bf16* src, size_t n);
void convert_serial(float* dst, const fp16* src, size_t n);
void convert_serial(bf16* dst, const float* src, size_t n);
void convert_serial(fp16* dst, const float* src, size_t n);
void convert_serial(float* dst, const float* src, size_t n);

// Whether the fp16 bulk conversions use the F16C instructions on this CPU.
bool f16c_available();

}  // namespace chorus
