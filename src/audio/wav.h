// Waveform input for the speech front end: a RIFF/WAVE reader, a 16-bit PCM
// writer (tests and tools) and a band-limited resampler. Everything the speech
// model sees is 16 kHz mono float in [-1, 1] (kSampleRate, as Whisper).
//
// Reader (Microsoft RIFF/WAVE, "Multimedia Programming Interface and Data
// Specifications 1.0", and the WAVE_FORMAT_EXTENSIBLE addendum):
//   - format tag 1 (PCM): 8-bit unsigned, 16-, 24- and 32-bit signed little endian;
//   - format tag 3 (IEEE float): 32- and 64-bit;
//   - format tag 0xFFFE (extensible) whose sub-format GUID is PCM or IEEE float
//     (decoded by the container size, so 20-bit samples in a 24-bit container work);
//   - any number of channels, mixed down to mono by the mean of the channels;
//   - chunks other than 'fmt ' and 'data' (LIST, fact, cue, ...) are skipped; a
//     chunk of odd size is followed by one pad byte, as RIFF requires.
// The RIFF size field in the header is not trusted (streaming writers leave it
// 0 or 0xFFFFFFFF): chunks are walked to the end of the file. Every chunk must
// fit in the file; a data chunk that claims more bytes than remain is refused
// (truncated file), never silently shortened.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace chorus::audio {

// The sample rate of everything downstream of load_audio_16k (Hz).
inline constexpr int kSampleRate = 16000;

// A decoded file.
struct Audio {
  int sample_rate = 0;         // Hz, as stored in the file
  int channels = 0;            // channels in the file (samples are already mono)
  std::vector<float> samples;  // mono (mean of the channels); PCM scaled to [-1, 1)
                               // (int / 2^(bits-1), 8-bit as (u - 128) / 128);
                               // float files are passed through unchanged
};

// Reads and decodes a WAV file. Throws chorus::Error whose message starts with
// `path` and says what is wrong: not found, a directory, unreadable, empty
// file, not RIFF/WAVE, missing 'fmt ' or 'data' chunk, a chunk extending beyond
// the end of the file, truncated data, zero channels, zero sample rate,
// unsupported format tag / sub-format / bit depth, block_align not equal to
// channels * bits / 8, a data size that is not a whole number of frames, a
// non-finite float sample.
Audio read_wav(const std::string& path);

// The same parser over bytes in memory; `name` stands in for the path in
// error messages.
Audio read_wav_memory(const void* data, size_t n, const std::string& name);

// Writes mono 16-bit PCM at `sample_rate`: each sample is clipped to [-1, 1],
// scaled by 32768, rounded to nearest and clamped to [-32768, 32767] (so
// read_wav gives back x within 0.5 / 32768). Throws naming the path on I/O
// errors or a sample_rate <= 0.
void write_wav_pcm16(const std::string& path, std::span<const float> samples, int sample_rate);

// Band-limited resampling from `from_rate` to `to_rate` Hz (both > 0).
// Polyphase windowed sinc on the rational ratio L/M = to/from reduced by their
// gcd (Smith, "Digital Audio Resampling", ccrma.stanford.edu/~jos/resample):
//   y[k] = sum_j x[j] * h(k*M/L - j),  h(t) = rho * sinc(rho * t) * kaiser(t),
// where rho = 0.9 * min(1, L/M) puts the cutoff at 90 % of the lower of the two
// Nyquist frequencies, the Kaiser window (beta 8.6, ~85 dB stopband) spans 32
// zero crossings of the sinc on each side, and each polyphase row is normalised
// to unit DC gain. Samples before the start and after the end count as zero.
// Output length is ceil(n * L / M). from == to returns the input unchanged.
std::vector<float> resample(std::span<const float> in, int from_rate, int to_rate);

// read_wav, mixed down to mono, resampled to kSampleRate.
std::vector<float> load_audio_16k(const std::string& path);

}  // namespace chorus::audio
