// libFuzzer target: the shard validators (data/shard.h ShardReader,
// data/speech_shard.h SpeechDataset).
//
// Random bytes rarely make an HDF5 file, and the bugs that matter here are in
// our checks, not in libhdf5, so the input drives the *contents* of a
// well-formed HDF5 file: a valid text or speech shard is built from a few
// input bytes, then each attribute and dataset is, by the next input bytes,
// kept, left out, written with the wrong type, or given fuzzed values or a
// fuzzed length (FuzzedDataProvider yields zeros once the input is used up,
// and 0 means "keep", so a short input is a valid shard). The readers must
// refuse or accept; an accepted speech shard must serve every clip in bounds.
#include <fuzzer/FuzzedDataProvider.h>

#include <filesystem>

#include "core/hdf5.h"
#include "data/shard.h"
#include "data/speech_shard.h"
#include "fuzz_common.h"

using namespace chorus;

namespace {

enum Op : uint8_t { kKeep, kOmit, kWrongType, kFuzzValue, kFuzzLength, kNumOps };

class Mutator {
 public:
  Mutator(FuzzedDataProvider& fdp, h5::File& f) : fdp_(fdp), f_(f) {}

  Op op() { return static_cast<Op>(fdp_.ConsumeIntegralInRange<uint8_t>(0, 15) % kNumOps); }

  void attr_string(const char* name, const std::string& valid) {
    switch (op()) {
      case kOmit:
        return;
      case kWrongType:
        return h5::write_attr_int(f_, name, fdp_.ConsumeIntegral<int64_t>());
      case kFuzzValue:
      case kFuzzLength:
        return h5::write_attr_string(f_, name, fdp_.ConsumeRandomLengthString(24));
      default:
        return h5::write_attr_string(f_, name, valid);
    }
  }
  void attr_int(const char* name, int64_t valid, hid_t type = H5T_STD_I64LE) {
    switch (op()) {
      case kOmit:
        return;
      case kWrongType:
        return h5::write_attr_string(f_, name, fdp_.ConsumeRandomLengthString(8));
      case kFuzzValue:
        return h5::write_attr_int(f_, name, fdp_.ConsumeIntegral<int64_t>());
      case kFuzzLength:
        return h5::write_attr_uint(f_, name, fdp_.ConsumeIntegral<uint64_t>());
      default:
        return h5::write_attr_int(f_, name, valid, type);
    }
  }
  void attr_uint(const char* name, uint64_t valid) {
    switch (op()) {
      case kOmit:
        return;
      case kWrongType:
        return h5::write_attr_string(f_, name, fdp_.ConsumeRandomLengthString(8));
      case kFuzzValue:
        return h5::write_attr_uint(f_, name, valid + fdp_.ConsumeIntegralInRange<int64_t>(-2, 2));
      case kFuzzLength:
        return h5::write_attr_int(f_, name, fdp_.ConsumeIntegral<int64_t>());
      default:
        return h5::write_attr_uint(f_, name, valid);
    }
  }
  template <class T>
  void dataset(const char* name, hid_t file_type, std::vector<T> v) {
    switch (op()) {
      case kOmit:
        return;
      case kWrongType: {
        // The same values stored as another type.
        static const hid_t types[] = {H5T_STD_U8LE,  H5T_STD_I16LE,  H5T_STD_U16LE,
                                      H5T_STD_U32LE, H5T_STD_I32LE,  H5T_STD_U64LE,
                                      H5T_STD_I64LE, H5T_IEEE_F32LE, H5T_IEEE_F64LE};
        const hid_t t = types[fdp_.ConsumeIntegralInRange<size_t>(0, std::size(types) - 1)];
        return h5::write_1d(f_, name, t, v);
      }
      case kFuzzValue:
        for (int k = fdp_.ConsumeIntegralInRange<int>(1, 4); k > 0 && !v.empty(); --k)
          v[fdp_.ConsumeIntegralInRange<size_t>(0, v.size() - 1)] = value<T>();
        break;
      case kFuzzLength:
        v.resize(fdp_.ConsumeIntegralInRange<size_t>(0, v.size() + 3), value<T>());
        break;
      default:
        break;
    }
    h5::write_1d(f_, name, file_type, v);
  }

 private:
  template <class T>
  T value() {
    if constexpr (std::is_floating_point_v<T>)
      return static_cast<T>(fdp_.ConsumeFloatingPoint<double>());
    else
      return fdp_.ConsumeIntegral<T>();
  }
  FuzzedDataProvider& fdp_;
  h5::File& f_;
};

// Sizes 1..n drawn from the input (0 when it is used up gives 1).
std::vector<uint64_t> offsets(FuzzedDataProvider& fdp, size_t n, uint64_t max_len) {
  std::vector<uint64_t> off = {0};
  for (size_t i = 0; i < n; ++i)
    off.push_back(off.back() + 1 + fdp.ConsumeIntegralInRange<uint64_t>(0, max_len - 1));
  return off;
}

void write_text_shard(FuzzedDataProvider& fdp, h5::File& f) {
  const int64_t vocab = fdp.ConsumeBool() ? 70000 : 300;
  const std::vector<uint64_t> docs = offsets(fdp, 1 + fdp.ConsumeIntegralInRange<size_t>(0, 4), 8);
  std::vector<uint32_t> tokens(docs.back());
  for (auto& t : tokens) t = fdp.ConsumeIntegralInRange<uint32_t>(0, static_cast<uint32_t>(vocab - 1));
  Mutator m(fdp, f);
  m.dataset("tokens", vocab <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE, tokens);
  m.dataset("doc_offsets", H5T_STD_U64LE, docs);
  m.attr_string("format", "chorus-text-shard");
  m.attr_int("version", 1, H5T_STD_I32LE);
  m.attr_int("vocab_size", vocab);
  m.attr_string("tokenizer_hash", "fuzzhash");
  m.attr_uint("n_tokens", tokens.size());
  m.attr_uint("n_docs", docs.size() - 1);
  m.attr_uint("n_bytes", 3 * tokens.size());
  m.attr_string("split", "train");
}

void write_speech_shard(FuzzedDataProvider& fdp, h5::File& f) {
  const size_t n = 1 + fdp.ConsumeIntegralInRange<size_t>(0, 3);
  const std::vector<uint64_t> pcm_off = offsets(fdp, n, 40), text_off = offsets(fdp, n, 6),
                              tok_off = offsets(fdp, n, 4), src_off = offsets(fdp, n, 6);
  std::vector<int16_t> pcm(pcm_off.back());
  for (auto& s : pcm) s = fdp.ConsumeIntegral<int16_t>();
  std::vector<uint8_t> text(text_off.back(), 'a'), source(src_off.back(), 'w');
  std::vector<uint32_t> tokens(tok_off.back(), 97);
  std::vector<uint16_t> lang(n);
  std::vector<float> duration(n);
  for (size_t i = 0; i < n; ++i) {
    lang[i] = fdp.ConsumeIntegralInRange<uint16_t>(0, 1);
    duration[i] = static_cast<float>(pcm_off[i + 1] - pcm_off[i]) / data::kSpeechSampleRate;
  }
  Mutator m(fdp, f);
  m.dataset("pcm", H5T_STD_I16LE, pcm);
  m.dataset("pcm_offsets", H5T_STD_U64LE, pcm_off);
  m.dataset("text", H5T_STD_U8LE, text);
  m.dataset("text_offsets", H5T_STD_U64LE, text_off);
  m.dataset("tokens", H5T_STD_U32LE, tokens);
  m.dataset("token_offsets", H5T_STD_U64LE, tok_off);
  m.dataset("lang", H5T_STD_U16LE, lang);
  m.dataset("duration", H5T_IEEE_F32LE, duration);
  m.dataset("source", H5T_STD_U8LE, source);
  m.dataset("source_offsets", H5T_STD_U64LE, src_off);
  m.attr_string("format", "chorus-speech");
  m.attr_int("version", 1, H5T_STD_I32LE);
  m.attr_int("sample_rate", data::kSpeechSampleRate, H5T_STD_I32LE);
  m.attr_string("tokenizer_hash", "fuzzhash");
  m.attr_uint("n_clips", n);
  m.attr_uint("n_samples", pcm.size());
  m.attr_string("languages", "de,en");
  m.attr_string("split", "train");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  const bool speech = fdp.ConsumeBool();
  const std::string dir = fuzz::scratch_dir() + "/shards";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/train_000000.h5";
  {
    h5::File f = h5::File::create(path);
    if (speech)
      write_speech_shard(fdp, f);
    else
      write_text_shard(fdp, f);
    f.close();
  }
  if (!speech) {
    const bool expect = fdp.ConsumeBool();
    fuzz::accepts([&] {
      data::ShardReader r(path, expect ? "fuzzhash" : "", expect ? 300 : 0);
      const auto& off = r.doc_offsets();
      FUZZ_ASSERT(!off.empty() && off.front() == 0 && off.back() == r.tokens().size());
      for (uint32_t t : r.tokens()) FUZZ_ASSERT(t < r.info().vocab_size);
    });
    return 0;
  }
  fuzz::accepts([&] {
    const data::SpeechDataset ds(dir, "train", "");
    std::vector<float> pcm;
    for (size_t i = 0; i < ds.size(); ++i) {
      FUZZ_ASSERT(ds.lang_id(i) < ds.languages().size());
      (void)ds.lang(i);
      (void)ds.text(i);
      (void)ds.tokens(i);
      (void)ds.source(i);
      ds.read_pcm(i, pcm);
      FUZZ_ASSERT(pcm.size() == ds.n_samples(i) && !pcm.empty());
    }
  });
  return 0;
}
