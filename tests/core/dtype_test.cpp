// Conversions between fp32 and the 16-bit storage types (core/dtype.h):
// exhaustive over every 16-bit pattern, every rounding tie of fp16 and bf16,
// the special values, 10 million random fp32 patterns against independent
// references, and the bulk conversions against the scalar ones.
//
// References: fp16 against GCC's _Float16 (IEEE binary16, conversion from float
// rounds to nearest even), both against ref_round below, which picks the nearest
// value of a binary format in exact double arithmetic with ties to even and
// shares no code or bit tricks with src/core/dtype.h.
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

#if defined(__FLT16_MANT_DIG__)
#define CHORUS_HAVE_FLOAT16 1
#else
#define CHORUS_HAVE_FLOAT16 0
#endif

namespace chorus {
namespace {

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
float float_of(uint32_t b) { return std::bit_cast<float>(b); }

// A binary format with `mant` stored mantissa bits and exponents [emin, emax]
// (bias emax): bf16 {7, -126, 127}, fp16 {10, -14, 15}.
struct Format {
  int mant, emin, emax;
};
constexpr Format kBf16{7, -126, 127};
constexpr Format kFp16{10, -14, 15};

uint16_t inf_bits(Format f) { return static_cast<uint16_t>((2 * f.emax + 1) << f.mant); }

// The nearest value of format f to finite x, ties to even, as bits; values at or
// beyond the largest finite one plus half an ulp become Inf (IEEE 754 overflow
// under round-to-nearest). Exact: x is a float, all scalings are powers of two.
uint16_t ref_round(float x, Format f) {
  const uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  const double a = std::fabs(static_cast<double>(x));
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1): floor(log2 a) = e - 1
  const int E = a == 0.0 ? f.emin : std::max(e - 1, f.emin);
  const double ulp = std::ldexp(1.0, E - f.mant);
  const double q = a / ulp;  // the value in ulps of its binade (exact)
  double n = std::floor(q);
  const double frac = q - n;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(n, 2.0) == 1.0)) n += 1.0;
  const double v = n * ulp;
  if (v >= std::ldexp(1.0, f.emax + 1)) return static_cast<uint16_t>(sign | inf_bits(f));
  if (v < std::ldexp(1.0, f.emin)) return static_cast<uint16_t>(sign | static_cast<uint32_t>(n));  // subnormal
  int ev = 0;
  std::frexp(v, &ev);
  const uint32_t m = static_cast<uint32_t>(std::ldexp(v, f.mant - (ev - 1))) - (1u << f.mant);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(ev - 1 + f.emax) << f.mant) | m);
}

// fp16 reference for finite and infinite x (NaN is checked separately).
uint16_t fp16_reference(float x) {
#if CHORUS_HAVE_FLOAT16
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, sizeof b);
  return b;
#else
  if (std::isinf(x)) return static_cast<uint16_t>((std::signbit(x) ? 0x8000u : 0u) | 0x7c00u);
  return ref_round(x, kFp16);
#endif
}

bool fp16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }
bool bf16_is_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0; }

// What a NaN must become: quiet bit set, sign and the top payload bits kept.
uint16_t expected_fp16_nan(uint32_t x) { return static_cast<uint16_t>(((x >> 16) & 0x8000u) | 0x7e00u | ((x >> 13) & 0x3ffu)); }
uint16_t expected_bf16_nan(uint32_t x) { return static_cast<uint16_t>((x >> 16) | 0x0040u); }

// ---------------------------------------------------------------- fp16

TEST(Fp16, EveryPatternRoundTripsThroughF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    const float f = fp16_bits_to_f32(b);
    const uint16_t back = f32_to_fp16_bits(f);
    if (fp16_is_nan(b)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      ASSERT_EQ(bits_of(f) >> 31, h >> 15) << std::hex << h;                  // sign kept
      ASSERT_EQ((bits_of(f) >> 13) & 0x1ffu, h & 0x1ffu) << std::hex << h;    // payload kept
      ASSERT_NE(bits_of(f) & 0x00400000u, 0u) << std::hex << h;               // quiet (as vcvtph2ps)
      ASSERT_EQ(back, h | 0x0200u) << std::hex << h;  // quiet bit set, sign and payload kept
    } else {
      ASSERT_EQ(back, h) << std::hex << h << " -> " << f;
#if CHORUS_HAVE_FLOAT16
      _Float16 ref;
      std::memcpy(&ref, &b, sizeof ref);
      ASSERT_EQ(bits_of(f), bits_of(static_cast<float>(ref))) << std::hex << h;  // widening is exact
#endif
    }
  }
}

TEST(Fp16, EveryTieRoundsToEvenAndNeighboursToNearest) {
  // Each pair of adjacent finite fp16 values (lo, hi) of either sign, including
  // the pair (0, smallest subnormal). The midpoint needs 12 significant bits,
  // so it and its fp32 neighbours are exact floats.
  int n_checked = 0;
  for (uint32_t sign : {0u, 0x8000u}) {
    for (uint32_t lo = 0; lo < 0x7bffu; ++lo) {
      const uint16_t a = static_cast<uint16_t>(sign | lo), b = static_cast<uint16_t>(sign | (lo + 1));
      const float fa = fp16_bits_to_f32(a), fb = fp16_bits_to_f32(b);
      const float mid = (fa + fb) * 0.5f;
      ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(fa) + fb) / 2) << std::hex << lo;
      const uint16_t even = (lo & 1u) ? b : a;
      ASSERT_EQ(f32_to_fp16_bits(mid), even) << "tie between " << fa << " and " << fb;
      const float toward_a = std::nextafter(mid, fa), toward_b = std::nextafter(mid, fb);
      ASSERT_EQ(f32_to_fp16_bits(toward_a), a) << "just below the midpoint of " << fa << ", " << fb;
      ASSERT_EQ(f32_to_fp16_bits(toward_b), b) << "just above the midpoint of " << fa << ", " << fb;
      for (float x : {mid, toward_a, toward_b}) ASSERT_EQ(fp16_reference(x), f32_to_fp16_bits(x)) << x;
      n_checked += 3;
    }
  }
  EXPECT_EQ(n_checked, 2 * 3 * 0x7bff);
}

TEST(Fp16, OverflowSaturatesToInfAtHalfAnUlpAboveMax) {
  EXPECT_EQ(f32_to_fp16_bits(65504.0f), 0x7bffu);
  EXPECT_EQ(f32_to_fp16_bits(65519.99f), 0x7bffu);
  EXPECT_EQ(f32_to_fp16_bits(std::nextafter(65520.0f, 0.0f)), 0x7bffu);
  EXPECT_EQ(f32_to_fp16_bits(65520.0f), 0x7c00u);  // the tie above max rounds to "even" Inf
  EXPECT_EQ(f32_to_fp16_bits(-65520.0f), 0xfc00u);
  EXPECT_EQ(f32_to_fp16_bits(65536.0f), 0x7c00u);
  EXPECT_EQ(f32_to_fp16_bits(1e10f), 0x7c00u);
  EXPECT_EQ(f32_to_fp16_bits(-1e10f), 0xfc00u);
  EXPECT_EQ(f32_to_fp16_bits(std::numeric_limits<float>::max()), 0x7c00u);
  EXPECT_EQ(f32_to_fp16_bits(std::numeric_limits<float>::infinity()), 0x7c00u);
  EXPECT_EQ(f32_to_fp16_bits(-std::numeric_limits<float>::infinity()), 0xfc00u);
  EXPECT_EQ(fp16_bits_to_f32(0x7c00u), std::numeric_limits<float>::infinity());
  EXPECT_EQ(fp16_bits_to_f32(0x7bffu), 65504.0f);
}

TEST(Fp16, SubnormalsAndZeros) {
  const float s24 = std::ldexp(1.0f, -24), s25 = std::ldexp(1.0f, -25);
  EXPECT_EQ(f32_to_fp16_bits(s24), 0x0001u);  // smallest subnormal, exact
  EXPECT_EQ(fp16_bits_to_f32(0x0001u), s24);
  EXPECT_EQ(f32_to_fp16_bits(s25), 0x0000u);  // tie between 0 and 2^-24: even is 0
  EXPECT_EQ(f32_to_fp16_bits(-s25), 0x8000u);
  EXPECT_EQ(f32_to_fp16_bits(std::nextafter(s25, 1.0f)), 0x0001u);
  EXPECT_EQ(f32_to_fp16_bits(s25 + std::ldexp(1.0f, -40)), 0x0001u);
  EXPECT_EQ(f32_to_fp16_bits(3 * s25), 0x0002u);   // tie between 1 and 2 units: even is 2
  EXPECT_EQ(f32_to_fp16_bits(5 * s25), 0x0002u);   // tie between 2 and 3 units: even is 2
  EXPECT_EQ(f32_to_fp16_bits(-3 * s25), 0x8002u);
  EXPECT_EQ(f32_to_fp16_bits(std::ldexp(1.0f, -14)), 0x0400u);  // smallest normal
  EXPECT_EQ(f32_to_fp16_bits(std::ldexp(1023.0f, -24)), 0x03ffu);  // largest subnormal
  EXPECT_EQ(f32_to_fp16_bits(std::ldexp(1023.5f, -24)), 0x0400u);  // tie up into the normals
  EXPECT_EQ(fp16_bits_to_f32(0x03ffu), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f32_to_fp16_bits(0.0f), 0x0000u);
  EXPECT_EQ(f32_to_fp16_bits(-0.0f), 0x8000u);
  EXPECT_TRUE(std::signbit(fp16_bits_to_f32(0x8000u)));
  // fp32 subnormals are far below 2^-25: zero with the sign kept.
  for (uint32_t x : {0x00000001u, 0x00000100u, 0x00400000u, 0x007fffffu}) {
    EXPECT_EQ(f32_to_fp16_bits(float_of(x)), 0x0000u) << std::hex << x;
    EXPECT_EQ(f32_to_fp16_bits(float_of(x | 0x80000000u)), 0x8000u) << std::hex << x;
  }
}

TEST(Fp16, NaNStaysNaN) {
  // Payloads only in the low 13 bits (dropped by the narrowing) must not give
  // Inf; sign and top payload bits survive; the quiet bit is always set.
  for (uint32_t x : {0x7f800001u, 0x7f801fffu, 0x7fc00000u, 0x7fffffffu, 0x7f802000u, 0x7fa00000u, 0xff800001u,
                     0xffc00001u, 0xffe02000u}) {
    const uint16_t h = f32_to_fp16_bits(float_of(x));
    EXPECT_TRUE(fp16_is_nan(h)) << std::hex << x << " -> " << h;
    EXPECT_EQ(h, expected_fp16_nan(x)) << std::hex << x;
  }
}

// ---------------------------------------------------------------- bf16

TEST(Bf16, EveryPatternRoundTripsThroughF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    const float f = bf16_bits_to_f32(b);
    ASSERT_EQ(bits_of(f), h << 16) << std::hex << h;  // widening is exact, NaN payloads included
    const uint16_t back = f32_to_bf16_bits(f);
    if (bf16_is_nan(b)) {
      ASSERT_EQ(back, h | 0x0040u) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(Bf16, EveryTieAndItsNeighbours) {
  // For every finite bf16 pattern h (both signs) and the fp32 values between it
  // and the next one away from zero: low half 0x8000 is the exact midpoint
  // (ties to even), 0x7fff just below it (rounds to h), 0x8001 just above
  // (rounds away to h + 1, which is Inf above the largest finite value).
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7f80u) == 0x7f80u) continue;  // Inf / NaN
    const uint16_t even = (h & 1u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    const uint32_t x = h << 16;
    ASSERT_EQ(f32_to_bf16_bits(float_of(x | 0x8000u)), even) << std::hex << (x | 0x8000u);
    ASSERT_EQ(f32_to_bf16_bits(float_of(x | 0x7fffu)), h) << std::hex << (x | 0x7fffu);
    ASSERT_EQ(f32_to_bf16_bits(float_of(x | 0x8001u)), h + 1) << std::hex << (x | 0x8001u);
    ASSERT_EQ(f32_to_bf16_bits(float_of(x | 0x0001u)), h) << std::hex << (x | 0x0001u);
    for (uint32_t low : {0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu})
      ASSERT_EQ(f32_to_bf16_bits(float_of(x | low)), ref_round(float_of(x | low), kBf16)) << std::hex << (x | low);
  }
}

TEST(Bf16, SpecialValues) {
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x7f7fffffu)), 0x7f80u);  // largest finite fp32 rounds to Inf
  EXPECT_EQ(f32_to_bf16_bits(float_of(0xff7fffffu)), 0xff80u);
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x7f7f7fffu)), 0x7f7fu);  // largest finite bf16 stays
  EXPECT_EQ(f32_to_bf16_bits(std::numeric_limits<float>::infinity()), 0x7f80u);
  EXPECT_EQ(f32_to_bf16_bits(-std::numeric_limits<float>::infinity()), 0xff80u);
  EXPECT_EQ(f32_to_bf16_bits(-0.0f), 0x8000u);
  EXPECT_EQ(f32_to_bf16_bits(0.0f), 0x0000u);
  EXPECT_TRUE(std::signbit(bf16_bits_to_f32(0x8000u)));
  // NaN: a payload only in the dropped low 16 bits must not round to Inf (or
  // carry into the sign); quiet bit set, sign and top payload bits kept.
  for (uint32_t x : {0x7f800001u, 0x7f80ffffu, 0x7f808000u, 0x7fc00000u, 0x7fffffffu, 0x7f810000u, 0xff800001u,
                     0xffffffffu, 0xff80ffffu}) {
    const uint16_t h = f32_to_bf16_bits(float_of(x));
    EXPECT_TRUE(bf16_is_nan(h)) << std::hex << x << " -> " << h;
    EXPECT_EQ(h, expected_bf16_nan(x)) << std::hex << x;
  }
  // fp32 subnormals round like any other value.
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x00008000u)), 0x0000u);  // tie: even is 0
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x00008001u)), 0x0001u);
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x00018000u)), 0x0002u);  // tie between 1 and 2: even is 2
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x80018000u)), 0x8002u);
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x007fffffu)), 0x0080u);  // largest subnormal rounds up to the smallest normal
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x00000001u)), 0x0000u);
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x80000001u)), 0x8000u);
}

// ---------------------------------------------------------------- random sampling

// 10 million fp32 bit patterns: half uniform over all 2^32 (every exponent,
// NaN and Inf included), half with exponents in [2^-27, 2^17) where fp16 has
// subnormals, normals and its overflow threshold.
TEST(Conversions, TenMillionRandomPatternsMatchReferences) {
  Rng rng(20240611, 3);
  constexpr int kSamples = 10'000'000;
  int n_bad_bf16 = 0, n_bad_fp16 = 0, n_bad_ref = 0;
  for (int i = 0; i < kSamples; ++i) {
    uint32_t x = static_cast<uint32_t>(rng.next_u64() >> 32);
    if (i & 1) {
      const uint32_t e = 127 - 27 + static_cast<uint32_t>(rng.below(27 + 17));
      x = (x & 0x807fffffu) | (e << 23);
    }
    const float f = float_of(x);
    const uint16_t b = f32_to_bf16_bits(f), h = f32_to_fp16_bits(f);
    if (std::isnan(f)) {
      n_bad_bf16 += b != expected_bf16_nan(x);
      n_bad_fp16 += h != expected_fp16_nan(x);
      continue;
    }
    const uint16_t rb = std::isinf(f) ? static_cast<uint16_t>((x >> 16)) : ref_round(f, kBf16);
    const uint16_t rh = fp16_reference(f);
    if (b != rb && ++n_bad_bf16 <= 5) ADD_FAILURE() << "bf16 of " << std::hex << x << ": " << b << " vs " << rb;
    if (h != rh && ++n_bad_fp16 <= 5) ADD_FAILURE() << "fp16 of " << std::hex << x << ": " << h << " vs " << rh;
#if CHORUS_HAVE_FLOAT16
    // The two references agree with each other too.
    if (!std::isinf(f) && rh != ref_round(f, kFp16)) ++n_bad_ref;
#endif
  }
  EXPECT_EQ(n_bad_bf16, 0);
  EXPECT_EQ(n_bad_fp16, 0);
  EXPECT_EQ(n_bad_ref, 0);
}

// ---------------------------------------------------------------- bulk conversions

// fp32 inputs with every kind of value, specials placed at positions that fall
// in and out of the 8-lane vector bodies.
std::vector<float> bulk_f32_input(size_t n, uint64_t seed) {
  static const uint32_t kSpecials[] = {
      0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f802001u, 0x7fa00000u,  // Inf, NaN, sNaN
      0x00000001u, 0x807fffffu, 0x00008000u, 0x00018000u,                                          // fp32 subnormals
      0x33000000u, 0x33400000u, 0xb3c00000u, 0x387fc000u,  // fp16 2^-25 tie, 3*2^-25, 1023.5*2^-24
      0x477fefffu, 0x477ff000u, 0x7f7fffffu, 0x00000000u, 0x80000000u, 0x3f808000u, 0x3f818000u};
  Rng rng(seed, 5);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = rng.next_u64();
    if (r % 7 == 0) {
      v[i] = float_of(kSpecials[(r >> 8) % std::size(kSpecials)]);
    } else if (r % 7 == 1) {
      v[i] = float_of(static_cast<uint32_t>(r >> 32));  // any pattern
    } else {
      v[i] = std::ldexp(2.0f * rng.uniform() - 1.0f, static_cast<int>(rng.below(48)) - 30);
    }
  }
  return v;
}

std::vector<uint16_t> bulk_u16_input(size_t n, uint64_t seed) {
  Rng rng(seed, 6);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = static_cast<uint16_t>(rng.next_u64() >> 48);  // NaN, Inf, subnormals included
  for (size_t i = 0; i < n; i += 5) v[i] |= 0x7c00u;  // more fp16 Inf / NaN (sNaN too)
  for (size_t i = 3; i < n; i += 11) v[i] |= 0x7f80u;  // more bf16 Inf / NaN
  return v;
}

template <typename H>
void check_bulk(size_t n, size_t offset) {
  static_assert(sizeof(H) == 2);
  SCOPED_TRACE(std::string(std::is_same_v<H, bf16> ? "bf16" : "fp16") + " n=" + std::to_string(n) +
               " offset=" + std::to_string(offset));
  const bool is_bf16 = std::is_same_v<H, bf16>;
  auto narrow = [&](float f) { return is_bf16 ? f32_to_bf16_bits(f) : f32_to_fp16_bits(f); };
  auto widen = [&](uint16_t h) { return bits_of(is_bf16 ? bf16_bits_to_f32(h) : fp16_bits_to_f32(h)); };
  // offset: start the arrays off their allocation's alignment.
  const std::vector<float> f_all = bulk_f32_input(n + offset, 1000 + n);
  const std::vector<uint16_t> h_all = bulk_u16_input(n + offset, 2000 + n);
  std::vector<H> h_in(n + offset);
  for (size_t i = 0; i < n + offset; ++i) h_in[i].bits = h_all[i];

  for (bool serial : {false, true}) {
    SCOPED_TRACE(serial ? "convert_serial" : "convert");
    std::vector<H> h_out(n + offset + 1, H{0xabcd});
    std::vector<float> f_out(n + offset + 1, float_of(0xdeadbeefu));
    if (serial) {
      convert_serial(h_out.data() + offset, f_all.data() + offset, n);
      convert_serial(f_out.data() + offset, h_in.data() + offset, n);
    } else {
      convert(h_out.data() + offset, f_all.data() + offset, n);
      convert(f_out.data() + offset, h_in.data() + offset, n);
    }
    int n_bad = 0;
    for (size_t i = offset; i < n + offset; ++i) {
      const uint16_t want = narrow(f_all[i]);
      if (h_out[i].bits != want && ++n_bad <= 5)
        ADD_FAILURE() << "narrowing [" << i - offset << "] of " << std::hex << bits_of(f_all[i]) << ": "
                      << h_out[i].bits << " vs scalar " << want;
      const uint32_t wantf = widen(h_in[i].bits);
      if (bits_of(f_out[i]) != wantf && ++n_bad <= 5)
        ADD_FAILURE() << "widening [" << i - offset << "] of " << std::hex << h_in[i].bits << ": "
                      << bits_of(f_out[i]) << " vs scalar " << wantf;
    }
    EXPECT_EQ(n_bad, 0);
    // Nothing written outside [offset, offset + n).
    EXPECT_EQ(h_out[n + offset].bits, 0xabcdu);
    EXPECT_EQ(bits_of(f_out[n + offset]), 0xdeadbeefu);
    if (offset > 0) {
      EXPECT_EQ(h_out[0].bits, 0xabcdu);
      EXPECT_EQ(bits_of(f_out[0]), 0xdeadbeefu);
    }
  }
}

// 0, the 8-lane F16C body and its tails (7, 8, 9), several chunks, and more
// than the 2^16 elements above which the conversion runs in parallel.
const size_t kBulkSizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 1000, 16384 + 3, 200003};

TEST(BulkConvert, Fp16BitIdenticalToScalar) {
  RecordProperty("f16c", f16c_available() ? "yes" : "no");
  for (size_t n : kBulkSizes)
    for (size_t offset : {0, 1}) check_bulk<fp16>(n, offset);
}

TEST(BulkConvert, Bf16BitIdenticalToScalar) {
  for (size_t n : kBulkSizes)
    for (size_t offset : {0, 1}) check_bulk<bf16>(n, offset);
}

TEST(BulkConvert, FloatToFloatCopies) {
  const std::vector<float> src = bulk_f32_input(200003, 7);
  std::vector<float> dst(src.size()), dst2(src.size());
  convert(dst.data(), src.data(), src.size());
  convert_serial(dst2.data(), src.data(), src.size());
  EXPECT_EQ(std::memcmp(dst.data(), src.data(), src.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(dst2.data(), src.data(), src.size() * sizeof(float)), 0);
  convert(dst.data(), dst.data(), dst.size());  // in place: a no-op
  EXPECT_EQ(std::memcmp(dst.data(), src.data(), src.size() * sizeof(float)), 0);
}

TEST(Dtype, RoundToAndFromF32) {
  EXPECT_EQ(round_to<float>(0.1f), 0.1f);
  EXPECT_EQ(round_to<bf16>(1.0f + std::ldexp(1.0f, -9)), 1.0f);          // below half an ulp (2^-8)
  EXPECT_EQ(round_to<bf16>(1.0f + 3 * std::ldexp(1.0f, -9)), 1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(round_to<fp16>(1.0f + std::ldexp(1.0f, -11)), 1.0f);         // tie: even is 1
  EXPECT_EQ(round_to<fp16>(1.0f + 3 * std::ldexp(1.0f, -11)), 1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(from_f32<bf16>(1.0f).bits, 0x3f80u);
  EXPECT_EQ(from_f32<fp16>(1.0f).bits, 0x3c00u);
  EXPECT_EQ(to_f32(bf16{0xc000u}), -2.0f);
  EXPECT_EQ(to_f32(fp16{0xc000u}), -2.0f);
}

// ---------------------------------------------------------------- Precision

TEST(Precision, ParseAcceptsNamesAndAliases) {
  EXPECT_EQ(parse_precision("fp32"), Precision::fp32);
  EXPECT_EQ(parse_precision("float32"), Precision::fp32);
  EXPECT_EQ(parse_precision("bf16"), Precision::bf16);
  EXPECT_EQ(parse_precision("bfloat16"), Precision::bf16);
  EXPECT_EQ(parse_precision("fp16"), Precision::fp16);
  EXPECT_EQ(parse_precision("float16"), Precision::fp16);
  for (Precision p : {Precision::fp32, Precision::bf16, Precision::fp16})
    EXPECT_EQ(parse_precision(precision_name(p)), p);
  EXPECT_EQ(precision_bytes(Precision::fp32), 4u);
  EXPECT_EQ(precision_bytes(Precision::bf16), 2u);
  EXPECT_EQ(precision_bytes(Precision::fp16), 2u);
  EXPECT_EQ(precision_of<bf16>(), Precision::bf16);
  EXPECT_EQ(precision_of<fp16>(), Precision::fp16);
  EXPECT_EQ(precision_of<float>(), Precision::fp32);
}

TEST(Precision, ParseRejectsUnknownNamingTheField) {
  for (const char* bad : {"fp8", "", "half", "fp32 "}) {
    try {
      parse_precision(bad, "train.precision");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("train.precision"), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("'") + bad + "'"), std::string::npos) << what;
      EXPECT_NE(what.find("bf16"), std::string::npos) << what;  // names the accepted values
    }
  }
  EXPECT_THROW(parse_precision("fp8"), Error);
  try {
    parse_precision("fp8");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("precision"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace chorus
