// WAV reading: every supported encoding round-trips a known signal within its
// quantisation step; multi-channel files are mixed down; unknown and odd-sized
// chunks are skipped; every malformed file is refused with its path and the
// specific reason; write_wav_pcm16 round-trips and clips.
#include "audio/wav.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/fixtures.h"
#include "core/error.h"

namespace fs = std::filesystem;
using chorus::Error;
using namespace chorus::audio;

namespace {

using chorus::testing::error_of;
using TempDir = chorus::testing::TempDir;

using Bytes = std::vector<uint8_t>;

void put(Bytes& b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

Bytes chunk(const char* id, const Bytes& body) {
  Bytes c(id, id + 4);
  put(c, body.size(), 4);
  c.insert(c.end(), body.begin(), body.end());
  if (body.size() % 2) c.push_back(0);  // RIFF pad byte
  return c;
}

Bytes fmt_body(int tag, int channels, int rate, int bits, int block_align = -1) {
  if (block_align < 0) block_align = channels * bits / 8;
  Bytes b;
  put(b, tag, 2);
  put(b, channels, 2);
  put(b, rate, 4);
  put(b, static_cast<uint64_t>(rate) * block_align, 4);
  put(b, block_align, 2);
  put(b, bits, 2);
  return b;
}

Bytes fmt_extensible(int sub_format, int channels, int rate, int bits, int valid_bits) {
  Bytes b = fmt_body(0xFFFE, channels, rate, bits);
  put(b, 22, 2);          // cbSize
  put(b, valid_bits, 2);  // wValidBitsPerSample
  put(b, 0x3, 4);         // dwChannelMask (front left | front right)
  put(b, sub_format, 4);  // GUID Data1
  put(b, 0x0000, 2);      // Data2
  put(b, 0x0010, 2);      // Data3
  for (uint8_t x : {0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71}) b.push_back(x);
  return b;
}

Bytes riff(const std::vector<Bytes>& chunks, const char* form = "WAVE", const char* magic = "RIFF") {
  Bytes body(form, form + 4);
  for (const Bytes& c : chunks) body.insert(body.end(), c.begin(), c.end());
  Bytes out(magic, magic + 4);
  put(out, body.size(), 4);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// Sample frames (frames, channels) of a test signal: channel c is a sine of
// amplitude 0.7 / (c + 1) with opposite sign on odd channels.
std::vector<std::vector<double>> signal(int frames, int channels, int rate) {
  std::vector<std::vector<double>> s(frames, std::vector<double>(channels));
  for (int i = 0; i < frames; ++i)
    for (int c = 0; c < channels; ++c)
      s[i][c] = (c % 2 ? -1.0 : 1.0) * 0.7 / (c + 1) * std::sin(2 * M_PI * 440.0 * i / rate + 0.3);
  return s;
}

double mixed(const std::vector<double>& frame) {
  double sum = 0;
  for (double v : frame) sum += v;
  return sum / static_cast<double>(frame.size());
}

// Encodes the signal as `bits`-bit PCM or float (float_format).
Bytes encode(const std::vector<std::vector<double>>& s, int bits, bool float_format) {
  Bytes b;
  for (const auto& frame : s) {
    for (double x : frame) {
      if (float_format && bits == 32) {
        float f = static_cast<float>(x);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        put(b, u, 4);
      } else if (float_format) {
        uint64_t u;
        std::memcpy(&u, &x, 8);
        put(b, u, 8);
      } else if (bits == 8) {
        put(b, static_cast<uint64_t>(std::lround(x * 128.0) + 128), 1);
      } else {
        const double scale = std::ldexp(1.0, bits - 1);
        const int64_t v = std::llround(x * scale);
        put(b, static_cast<uint64_t>(v), bits / 8);
      }
    }
  }
  return b;
}

std::string write_file(const TempDir& dir, const std::string& name, const Bytes& b) {
  const std::string path = dir.file(name);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return path;
}

void expect_signal(const Audio& a, const std::vector<std::vector<double>>& s, double tol) {
  ASSERT_EQ(a.samples.size(), s.size());
  double worst = 0;
  for (size_t i = 0; i < s.size(); ++i) worst = std::max(worst, std::abs(a.samples[i] - mixed(s[i])));
  EXPECT_LE(worst, tol);
}

struct Case {
  const char* name;
  int bits;
  bool is_float;
  double tol;  // half a quantisation step (+ float rounding)
};

const Case kCases[] = {
    {"pcm8", 8, false, 0.5 / 128 + 1e-6},
    {"pcm16", 16, false, 0.5 / 32768 + 1e-7},
    {"pcm24", 24, false, 0.5 / 8388608 + 1e-7},
    {"pcm32", 32, false, 1e-7},
    {"float32", 32, true, 1e-7},
    {"float64", 64, true, 1e-7},
};

}  // namespace

TEST(Wav, EveryFormatRoundTripsMono) {
  TempDir dir;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto s = signal(1000, 1, 16000);
    const Bytes file = riff({chunk("fmt ", fmt_body(c.is_float ? 3 : 1, 1, 16000, c.bits)),
                             chunk("data", encode(s, c.bits, c.is_float))});
    const Audio a = read_wav(write_file(dir, std::string(c.name) + ".wav", file));
    EXPECT_EQ(a.sample_rate, 16000);
    EXPECT_EQ(a.channels, 1);
    expect_signal(a, s, c.tol);
  }
}

TEST(Wav, ExtensibleStereoAndSurroundAreMixedDown) {
  for (const Case& c : kCases) {
    for (int channels : {2, 6}) {
      SCOPED_TRACE(std::string(c.name) + " x" + std::to_string(channels));
      const auto s = signal(777, channels, 22050);
      const Bytes plain = riff({chunk("fmt ", fmt_body(c.is_float ? 3 : 1, channels, 22050, c.bits)),
                                chunk("data", encode(s, c.bits, c.is_float))});
      const Bytes ext =
          riff({chunk("fmt ", fmt_extensible(c.is_float ? 3 : 1, channels, 22050, c.bits, c.bits)),
                chunk("data", encode(s, c.bits, c.is_float))});
      for (const Bytes* b : {&plain, &ext}) {
        const Audio a = read_wav_memory(b->data(), b->size(), "mem.wav");
        EXPECT_EQ(a.channels, channels);
        EXPECT_EQ(a.sample_rate, 22050);
        expect_signal(a, s, c.tol);
      }
    }
  }
}

TEST(Wav, ExtensibleWith20ValidBitsIn24BitContainer) {
  // 20-bit samples are left-justified in the 24-bit container: decoding by
  // container size gives the right value.
  const auto s = signal(300, 1, 16000);
  Bytes data;
  for (const auto& f : s) put(data, static_cast<uint64_t>(std::llround(f[0] * (1 << 19)) << 4), 3);
  const Bytes b = riff({chunk("fmt ", fmt_extensible(1, 1, 16000, 24, 20)), chunk("data", data)});
  const Audio a = read_wav_memory(b.data(), b.size(), "x.wav");
  expect_signal(a, s, 0.5 / (1 << 19) + 1e-7);
}

TEST(Wav, SkipsUnknownAndOddSizedChunks) {
  const auto s = signal(101, 1, 16000);
  Bytes odd(5, 'x');  // odd size: followed by a pad byte
  const Bytes b =
      riff({chunk("LIST", odd), chunk("fmt ", fmt_body(1, 1, 16000, 16)), chunk("fact", Bytes(4, 0)),
            chunk("data", encode(s, 16, false)), chunk("id3 ", Bytes(3, 1))});
  const Audio a = read_wav_memory(b.data(), b.size(), "chunks.wav");
  expect_signal(a, s, 0.5 / 32768 + 1e-7);
  // 8-bit mono with an odd number of samples: the data chunk itself is padded.
  const Bytes b8 = riff({chunk("fmt ", fmt_body(1, 1, 8000, 8)), chunk("data", encode(s, 8, false))});
  ASSERT_EQ(b8.size() % 2, 0u);
  expect_signal(read_wav_memory(b8.data(), b8.size(), "odd8.wav"), s, 0.5 / 128 + 1e-6);
}

TEST(Wav, Resamples44100To16000OnLoad) {
  TempDir dir;
  const int rate = 44100, n = 44100;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>(0.5 * std::sin(2 * M_PI * 1000.0 * i / rate));
  const std::string path = dir.file("cd.wav");
  write_wav_pcm16(path, x, rate);
  const std::vector<float> y = load_audio_16k(path);
  ASSERT_EQ(y.size(), 16000u);
  double worst = 0;
  for (int k = 400; k < 16000 - 400; ++k)
    worst = std::max(worst, std::abs(y[k] - 0.5 * std::sin(2 * M_PI * 1000.0 * k / kSampleRate)));
  EXPECT_LT(worst, 0.005);  // 1 % of the amplitude
}

TEST(Wav, WritePcm16RoundTripsAndClips) {
  TempDir dir;
  std::vector<float> x = {0.0f, 0.25f, -0.25f, 0.999f, -1.0f, 1.5f, -2.0f, 1e-5f};
  const std::string path = dir.file("w.wav");
  write_wav_pcm16(path, x, 8000);
  const Audio a = read_wav(path);
  EXPECT_EQ(a.sample_rate, 8000);
  EXPECT_EQ(a.channels, 1);
  ASSERT_EQ(a.samples.size(), x.size());
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(a.samples[i], x[i], 0.5 / 32768) << i;
  EXPECT_FLOAT_EQ(a.samples[5], 32767.0f / 32768.0f);  // clipped to 1, then to the int16 range
  EXPECT_FLOAT_EQ(a.samples[6], -1.0f);
  EXPECT_NEAR(a.samples[7], 1e-5, 0.5 / 32768);
  EXPECT_CONTAINS(error_of([&] { write_wav_pcm16(dir.file("no/such/dir/x.wav"), x, 8000); }),
                  "no/such/dir/x.wav");
  EXPECT_CONTAINS(error_of([&] { write_wav_pcm16(dir.file("r.wav"), x, 0); }), "sample_rate");
}

TEST(Wav, EmptyDataChunkIsAnEmptyClipNotAnError) {
  const Bytes b = riff({chunk("fmt ", fmt_body(1, 2, 16000, 16)), chunk("data", {})});
  const Audio a = read_wav_memory(b.data(), b.size(), "silence.wav");
  EXPECT_TRUE(a.samples.empty());
  EXPECT_EQ(a.channels, 2);
}

// Each malformed file: the message starts with the path and names the problem.
TEST(Wav, RefusesMalformedFilesWithPathAndReason) {
  TempDir dir;
  const auto s = signal(64, 1, 16000);
  const Bytes good_fmt = chunk("fmt ", fmt_body(1, 1, 16000, 16));
  const Bytes good_data = chunk("data", encode(s, 16, false));
  auto truncated = riff({good_fmt, good_data});
  truncated.resize(truncated.size() - 10);
  Bytes huge_list = riff({good_fmt, good_data});
  {  // a LIST chunk claiming 1000 bytes at the end of the file
    Bytes c = {'L', 'I', 'S', 'T'};
    put(c, 1000, 4);
    c.insert(c.end(), 6, 0);
    huge_list.insert(huge_list.end(), c.begin(), c.end());
  }
  Bytes half_frame = riff({chunk("fmt ", fmt_body(1, 2, 16000, 16)), chunk("data", Bytes(6, 0))});
  Bytes nan_float;
  {
    Bytes data;
    const float v[2] = {0.5f, std::nanf("")};
    for (float f : v) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      put(data, u, 4);
    }
    nan_float = riff({chunk("fmt ", fmt_body(3, 1, 16000, 32)), chunk("data", data)});
  }
  struct Bad {
    const char* name;
    Bytes bytes;
    const char* reason;
  };
  const std::vector<Bad> cases = {
      {"empty.wav", {}, "empty file"},
      {"magic.wav", riff({good_fmt, good_data}, "WAVE", "RIFX"), "not a RIFF/WAVE file"},
      {"short.wav", Bytes{'R', 'I', 'F', 'F', 0, 0}, "not a RIFF/WAVE file"},
      {"avi.wav", riff({good_fmt, good_data}, "AVI "), "expected 'WAVE'"},
      {"nofmt.wav", riff({good_data}), "missing 'fmt ' chunk"},
      {"nodata.wav", riff({good_fmt, chunk("LIST", Bytes(4, 0))}), "missing 'data' chunk"},
      {"beyond.wav", huge_list, "beyond the end of the file"},
      {"truncated.wav", truncated, "truncated data"},
      {"zerochannels.wav", riff({chunk("fmt ", fmt_body(1, 0, 16000, 16, 2)), good_data}), "zero channels"},
      {"zerorate.wav", riff({chunk("fmt ", fmt_body(1, 1, 0, 16)), good_data}), "zero sample rate"},
      {"bits12.wav", riff({chunk("fmt ", fmt_body(1, 1, 16000, 12, 2)), good_data}), "unsupported bit depth"},
      {"float16.wav", riff({chunk("fmt ", fmt_body(3, 1, 16000, 16)), good_data}), "unsupported bit depth"},
      {"alaw.wav", riff({chunk("fmt ", fmt_body(6, 1, 16000, 8)), good_data}),
       "unsupported format tag 6 (A-law)"},
      {"extsub.wav", riff({chunk("fmt ", fmt_extensible(2, 1, 16000, 16, 16)), good_data}),
       "unsupported WAVE_FORMAT_EXTENSIBLE sub-format"},
      {"align.wav", riff({chunk("fmt ", fmt_body(1, 2, 16000, 16, 2)), good_data}), "block_align is 2"},
      {"shortfmt.wav", riff({chunk("fmt ", Bytes(10, 0)), good_data}), "expected at least 16"},
      {"halfframe.wav", half_frame, "not a whole number of 4-byte frames"},
      {"nan.wav", nan_float, "not finite"},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = write_file(dir, c.name, c.bytes);
    const std::string msg = error_of([&] { read_wav(path); });
    EXPECT_EQ(msg.rfind(path, 0), 0u) << "message does not start with the path: " << msg;
    EXPECT_CONTAINS(msg, c.reason);
  }
  const std::string missing = dir.file("missing.wav");
  EXPECT_CONTAINS(error_of([&] { read_wav(missing); }), missing + ": file not found");
  const std::string subdir = dir.file("a_directory.wav");
  fs::create_directories(subdir);
  EXPECT_CONTAINS(error_of([&] { read_wav(subdir); }), subdir + ": is a directory");
}
