#include "audio/wav.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"

namespace chorus::audio {

namespace fs = std::filesystem;

namespace {

constexpr uint16_t kFormatPcm = 1;
constexpr uint16_t kFormatFloat = 3;
constexpr uint16_t kFormatExtensible = 0xFFFE;
// KSDATAFORMAT_SUBTYPE_* GUIDs are {code-0000-0010-8000-00AA00389B71}; these
// are bytes 2..15 of the GUID as stored (little-endian Data1..Data3).
constexpr uint8_t kGuidTail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                   0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};

uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// Chunk ids are four ASCII characters; show anything else as hex.
std::string fourcc(const uint8_t* p) {
  bool printable = true;
  for (int i = 0; i < 4; ++i) printable = printable && p[i] >= 0x20 && p[i] < 0x7F;
  if (printable) return std::string(reinterpret_cast<const char*>(p), 4);
  return strfmt("0x%02X%02X%02X%02X", p[0], p[1], p[2], p[3]);
}

const char* format_name(uint16_t tag) {
  switch (tag) {
    case kFormatPcm:
      return "PCM";
    case kFormatFloat:
      return "IEEE float";
    case 2:
      return "Microsoft ADPCM";
    case 6:
      return "A-law";
    case 7:
      return "mu-law";
    case 0x11:
      return "IMA ADPCM";
    case 0x55:
      return "MPEG layer 3";
    case kFormatExtensible:
      return "extensible";
    default:
      return "unknown";
  }
}

struct Format {
  uint16_t tag = 0;  // PCM or float after resolving the extensible sub-format
  int channels = 0;
  int sample_rate = 0;
  int block_align = 0;
  int bits = 0;  // container bits per sample
};

Format parse_fmt(const uint8_t* p, uint32_t size, const char* name) {
  CHORUS_CHECK(size >= 16, "%s: 'fmt ' chunk is %u bytes, expected at least 16", name, size);
  Format f;
  const uint16_t tag = u16(p);
  f.channels = u16(p + 2);
  const uint32_t rate = u32(p + 4);
  f.block_align = u16(p + 12);
  f.bits = u16(p + 14);
  CHORUS_CHECK(f.channels > 0, "%s: 'fmt ' chunk: zero channels", name);
  CHORUS_CHECK(rate > 0, "%s: 'fmt ' chunk: zero sample rate", name);
  CHORUS_CHECK(rate <= 10'000'000, "%s: 'fmt ' chunk: sample rate %u Hz is implausible (corrupt header?)",
               name, rate);
  f.sample_rate = static_cast<int>(rate);
  f.tag = tag;
  if (tag == kFormatExtensible) {
    CHORUS_CHECK(
        size >= 40 && u16(p + 16) >= 22,
        "%s: 'fmt ' chunk: WAVE_FORMAT_EXTENSIBLE needs a 40-byte fmt chunk with cbSize >= 22, found "
        "%u bytes",
        name, size);
    const int valid_bits = u16(p + 18);
    CHORUS_CHECK(valid_bits <= f.bits,
                 "%s: 'fmt ' chunk: extensible valid bits per sample %d exceed the container's %d bits", name,
                 valid_bits, f.bits);
    const uint8_t* guid = p + 24;
    const uint16_t sub = u16(guid);
    CHORUS_CHECK(
        std::memcmp(guid + 2, kGuidTail, sizeof kGuidTail) == 0 && (sub == kFormatPcm || sub == kFormatFloat),
        "%s: unsupported WAVE_FORMAT_EXTENSIBLE sub-format (code %u, %s); expected PCM (1) or IEEE "
        "float (3)",
        name, sub, format_name(sub));
    f.tag = sub;
  } else {
    CHORUS_CHECK(
        tag == kFormatPcm || tag == kFormatFloat,
        "%s: unsupported format tag %u (%s); expected PCM (1), IEEE float (3) or extensible (0xFFFE)", name,
        tag, format_name(tag));
  }
  if (f.tag == kFormatPcm) {
    CHORUS_CHECK(f.bits == 8 || f.bits == 16 || f.bits == 24 || f.bits == 32,
                 "%s: unsupported bit depth: PCM with %d bits per sample; expected 8, 16, 24 or 32", name,
                 f.bits);
  } else {
    CHORUS_CHECK(f.bits == 32 || f.bits == 64,
                 "%s: unsupported bit depth: IEEE float with %d bits per sample; expected 32 or 64", name,
                 f.bits);
  }
  const int expected_align = f.channels * (f.bits / 8);
  CHORUS_CHECK(f.block_align == expected_align,
               "%s: 'fmt ' chunk: block_align is %d, expected channels * bits / 8 = %d * %d / 8 = %d", name,
               f.block_align, f.channels, f.bits, expected_align);
  return f;
}

// One sample of `bits` (container) at p, scaled to [-1, 1).
inline float decode_sample(const uint8_t* p, uint16_t tag, int bits) {
  if (tag == kFormatFloat) {
    if (bits == 32) {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    double v;
    std::memcpy(&v, p, 8);
    return static_cast<float>(v);
  }
  switch (bits) {
    case 8:
      return (static_cast<float>(p[0]) - 128.0f) * (1.0f / 128.0f);
    case 16:
      return static_cast<float>(static_cast<int16_t>(u16(p))) * (1.0f / 32768.0f);
    case 24: {
      // Sign-extend the 3 bytes through the top of a 32-bit word.
      const int32_t v =
          static_cast<int32_t>(static_cast<uint32_t>(p[0]) << 8 | static_cast<uint32_t>(p[1]) << 16 |
                               static_cast<uint32_t>(p[2]) << 24) >>
          8;
      return static_cast<float>(v) * (1.0f / 8388608.0f);
    }
    default:
      return static_cast<float>(static_cast<double>(static_cast<int32_t>(u32(p))) * (1.0 / 2147483648.0));
  }
}

}  // namespace

Audio read_wav_memory(const void* data, size_t n, const std::string& name_s) {
  const char* name = name_s.c_str();
  const uint8_t* b = static_cast<const uint8_t*>(data);
  CHORUS_CHECK(n > 0, "%s: empty file (0 bytes), expected a RIFF/WAVE file", name);
  CHORUS_CHECK(n >= 4 && std::memcmp(b, "RIFF", 4) == 0,
               "%s: not a RIFF/WAVE file (the first 4 bytes are not 'RIFF')", name);
  CHORUS_CHECK(n >= 12, "%s: not a RIFF/WAVE file (only %zu bytes, shorter than the 12-byte RIFF header)",
               name, n);
  CHORUS_CHECK(std::memcmp(b + 8, "WAVE", 4) == 0,
               "%s: not a RIFF/WAVE file (RIFF form type is '%s', expected 'WAVE')", name,
               fourcc(b + 8).c_str());

  bool have_fmt = false, have_data = false;
  Format fmt;
  const uint8_t* pcm = nullptr;
  uint64_t pcm_bytes = 0;
  size_t pos = 12;
  // A tail shorter than a chunk header is padding or junk after the last chunk.
  while (n - pos >= 8) {
    const std::string id = fourcc(b + pos);
    const uint64_t size = u32(b + pos + 4);
    const size_t body = pos + 8;
    const uint64_t remain = n - body;
    if (id == "data") {
      CHORUS_CHECK(
          size <= remain,
          "%s: truncated data: the 'data' chunk at offset %zu declares %llu bytes but only %llu remain in "
          "the file",
          name, pos, static_cast<unsigned long long>(size), static_cast<unsigned long long>(remain));
    } else {
      CHORUS_CHECK(size <= remain,
                   "%s: chunk '%s' at offset %zu declares %llu bytes, beyond the end of the file (%llu bytes "
                   "remain)",
                   name, id.c_str(), pos, static_cast<unsigned long long>(size),
                   static_cast<unsigned long long>(remain));
    }
    if (id == "fmt " && !have_fmt) {
      fmt = parse_fmt(b + body, static_cast<uint32_t>(size), name);
      have_fmt = true;
    } else if (id == "data" && !have_data) {
      pcm = b + body;
      pcm_bytes = size;
      have_data = true;
    }
    // RIFF chunks are word-aligned: an odd-sized chunk is followed by a pad byte.
    pos = body + static_cast<size_t>(size) + (size & 1);
    if (pos >= n) break;
  }
  CHORUS_CHECK(have_fmt, "%s: missing 'fmt ' chunk (no audio format description)", name);
  CHORUS_CHECK(have_data, "%s: missing 'data' chunk (no samples)", name);
  CHORUS_CHECK(
      pcm_bytes % static_cast<uint64_t>(fmt.block_align) == 0,
      "%s: 'data' chunk of %llu bytes is not a whole number of %d-byte frames (truncated or corrupt)", name,
      static_cast<unsigned long long>(pcm_bytes), fmt.block_align);

  Audio a;
  a.sample_rate = fmt.sample_rate;
  a.channels = fmt.channels;
  const size_t n_frames = static_cast<size_t>(pcm_bytes / static_cast<uint64_t>(fmt.block_align));
  a.samples.resize(n_frames);
  const int bytes = fmt.bits / 8;
  const float inv_channels = 1.0f / static_cast<float>(fmt.channels);
  for (size_t i = 0; i < n_frames; ++i) {
    const uint8_t* frame = pcm + i * static_cast<size_t>(fmt.block_align);
    float sum = 0.0f;
    for (int c = 0; c < fmt.channels; ++c) sum += decode_sample(frame + c * bytes, fmt.tag, fmt.bits);
    const float v = fmt.channels == 1 ? sum : sum * inv_channels;
    CHORUS_CHECK(std::isfinite(v), "%s: sample frame %zu is not finite (NaN or Inf in float data)", name, i);
    a.samples[i] = v;
  }
  return a;
}

Audio read_wav(const std::string& path) {
  const char* p = path.c_str();
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  CHORUS_CHECK(fs::exists(st), "%s: file not found", p);
  CHORUS_CHECK(!fs::is_directory(st), "%s: is a directory, expected a WAV file", p);
  CHORUS_CHECK(fs::is_regular_file(st), "%s: not a regular file, expected a WAV file", p);
  std::ifstream in(path, std::ios::binary);
  CHORUS_CHECK(in.good(), "%s: cannot open for reading: %s", p, std::strerror(errno));
  const uint64_t size = fs::file_size(path, ec);
  CHORUS_CHECK(!ec, "%s: cannot get the file size: %s", p, ec.message().c_str());
  std::vector<char> bytes(size);
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  CHORUS_CHECK(static_cast<uint64_t>(in.gcount()) == size, "%s: read error: expected %llu bytes, read %lld",
               p, static_cast<unsigned long long>(size), static_cast<long long>(in.gcount()));
  return read_wav_memory(bytes.data(), bytes.size(), path);
}

void write_wav_pcm16(const std::string& path, std::span<const float> samples, int sample_rate) {
  const char* p = path.c_str();
  CHORUS_CHECK(sample_rate > 0, "%s: sample_rate: expected > 0, got %d", p, sample_rate);
  const uint64_t data_bytes = 2ull * samples.size();
  CHORUS_CHECK(data_bytes + 36 <= UINT32_MAX, "%s: %zu samples do not fit a RIFF file (4 GiB)", p,
               samples.size());
  std::vector<uint8_t> out(44 + data_bytes);
  auto put16 = [&](size_t at, uint32_t v) {
    out[at] = static_cast<uint8_t>(v);
    out[at + 1] = static_cast<uint8_t>(v >> 8);
  };
  auto put32 = [&](size_t at, uint32_t v) {
    put16(at, v & 0xFFFF);
    put16(at + 2, v >> 16);
  };
  std::memcpy(out.data(), "RIFF", 4);
  put32(4, static_cast<uint32_t>(36 + data_bytes));
  std::memcpy(out.data() + 8, "WAVEfmt ", 8);
  put32(16, 16);
  put16(20, kFormatPcm);
  put16(22, 1);
  put32(24, static_cast<uint32_t>(sample_rate));
  put32(28, static_cast<uint32_t>(sample_rate) * 2);
  put16(32, 2);
  put16(34, 16);
  std::memcpy(out.data() + 36, "data", 4);
  put32(40, static_cast<uint32_t>(data_bytes));
  for (size_t i = 0; i < samples.size(); ++i) {
    const float x = std::clamp(samples[i], -1.0f, 1.0f);
    const long v = std::clamp(std::lround(static_cast<double>(x) * 32768.0), -32768L, 32767L);
    put16(44 + 2 * i, static_cast<uint16_t>(static_cast<int16_t>(v)));
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  CHORUS_CHECK(f.good(), "%s: cannot open for writing: %s", p, std::strerror(errno));
  f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  f.close();
  CHORUS_CHECK(!f.fail(), "%s: write failed: %s", p, std::strerror(errno));
}

// ---- resample -------------------------------------------------------------------------

namespace {

constexpr double kRolloff = 0.9;     // cutoff as a fraction of the lower Nyquist frequency
constexpr int kZeroCrossings = 32;   // sinc zero crossings per side inside the window
constexpr double kKaiserBeta = 8.6;  // ~85 dB stopband (Kaiser & Schafer 1980: A = beta / 0.1102 + 8.7)
constexpr size_t kMaxTableEntries = size_t{1} << 22;  // larger phase tables are computed on the fly

// Modified Bessel function of the first kind, order 0 (power series; converges
// quickly for the arguments of a Kaiser window, |x| <= beta).
double bessel_i0(double x) {
  double sum = 1.0, term = 1.0;
  const double q = 0.25 * x * x;
  for (int k = 1; k < 200; ++k) {
    term *= q / (static_cast<double>(k) * static_cast<double>(k));
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

struct SincKernel {
  double rho;   // normalised cutoff (cycles per input sample * 2)
  double half;  // half-width in input samples
  double i0_beta;

  double operator()(double t) const {
    const double a = std::abs(t);
    if (a >= half) return 0.0;
    const double x = rho * t;
    const double sinc = x == 0.0 ? 1.0 : std::sin(M_PI * x) / (M_PI * x);
    const double r = a / half;
    const double w = bessel_i0(kKaiserBeta * std::sqrt(1.0 - r * r)) / i0_beta;
    return rho * sinc * w;
  }
};

}  // namespace

std::vector<float> resample(std::span<const float> in, int from_rate, int to_rate) {
  CHORUS_CHECK(from_rate > 0 && to_rate > 0, "resample: rates: expected > 0, got %d Hz -> %d Hz", from_rate,
               to_rate);
  if (from_rate == to_rate || in.empty()) return std::vector<float>(in.begin(), in.end());
  const int64_t g = std::gcd(from_rate, to_rate);
  const int64_t L = to_rate / g, M = from_rate / g;
  const int64_t n = static_cast<int64_t>(in.size());
  const int64_t n_out = (n * L + M - 1) / M;

  SincKernel h;
  h.rho = kRolloff * std::min(1.0, static_cast<double>(L) / static_cast<double>(M));
  h.half = kZeroCrossings / h.rho;
  h.i0_beta = bessel_i0(kKaiserBeta);
  // Output k sits at input time t = k*M/L = base + p/L (base integer, phase p in
  // [0, L)); it uses inputs j = base + d for d in [1 - K, K], with weight
  // h(p/L - d).
  const int64_t K = static_cast<int64_t>(std::ceil(h.half));
  const int64_t taps = 2 * K;

  // Row p of the table: the taps of phase p, normalised to sum 1 (unit DC gain).
  auto fill_row = [&](int64_t p, float* row) {
    const double frac = static_cast<double>(p) / static_cast<double>(L);
    double sum = 0.0;
    std::vector<double> w(static_cast<size_t>(taps));
    for (int64_t i = 0; i < taps; ++i) {
      w[i] = h(frac - static_cast<double>(i + 1 - K));
      sum += w[i];
    }
    for (int64_t i = 0; i < taps; ++i) row[i] = static_cast<float>(w[i] / sum);
  };
  const bool use_table = static_cast<size_t>(L) * static_cast<size_t>(taps) <= kMaxTableEntries;
  std::vector<float> table;
  if (use_table) {
    table.resize(static_cast<size_t>(L * taps));
    for (int64_t p = 0; p < L; ++p) fill_row(p, table.data() + p * taps);
  }

  std::vector<float> out(static_cast<size_t>(n_out));
  std::vector<float> scratch(use_table ? 0 : static_cast<size_t>(taps));
  for (int64_t k = 0; k < n_out; ++k) {
    const int64_t base = (k * M) / L;
    const int64_t p = (k * M) % L;
    const float* row;
    if (use_table) {
      row = table.data() + p * taps;
    } else {
      fill_row(p, scratch.data());
      row = scratch.data();
    }
    const int64_t j0 = base + 1 - K;
    const int64_t lo = std::max<int64_t>(0, -j0), hi = std::min<int64_t>(taps, n - j0);
    double acc = 0.0;
    for (int64_t i = lo; i < hi; ++i) acc += static_cast<double>(row[i]) * static_cast<double>(in[j0 + i]);
    out[static_cast<size_t>(k)] = static_cast<float>(acc);
  }
  return out;
}

std::vector<float> load_audio_16k(const std::string& path) {
  Audio a = read_wav(path);
  if (a.sample_rate == kSampleRate) return std::move(a.samples);
  return resample(a.samples, a.sample_rate, kSampleRate);
}

}  // namespace chorus::audio
