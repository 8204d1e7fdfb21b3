// libFuzzer target: the WAV reader (audio::read_wav_memory) on arbitrary bytes,
// and the resampler on what it accepts. Accepted audio must be self-consistent:
// a positive rate and channel count, finite samples, and resample() giving
// ceil(n * 16000 / rate) samples.
#include <cmath>
#include <numeric>

#include "audio/wav.h"
#include "fuzz_common.h"

using namespace chorus;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  audio::Audio a;
  if (!fuzz::accepts([&] { a = audio::read_wav_memory(data, size, "fuzz.wav"); })) return 0;
  FUZZ_ASSERT(a.sample_rate > 0 && a.channels > 0);
  for (float v : a.samples) FUZZ_ASSERT(std::isfinite(v));
  // Resampling cost grows with the rate ratio; keep each input fast.
  if (a.samples.size() <= 2048) {
    const std::vector<float> r = audio::resample(a.samples, a.sample_rate, audio::kSampleRate);
    if (a.sample_rate == audio::kSampleRate || a.samples.empty()) {
      FUZZ_ASSERT(r.size() == a.samples.size());
    } else {
      const uint64_t n = a.samples.size(), from = static_cast<uint64_t>(a.sample_rate);
      const uint64_t g = std::gcd(from, uint64_t{audio::kSampleRate});
      const uint64_t L = audio::kSampleRate / g, M = from / g;
      FUZZ_ASSERT(r.size() == (n * L + M - 1) / M);
    }
  }
  return 0;
}
