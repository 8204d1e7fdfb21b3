#include "train/speech_batch.h"

#include <algorithm>

#include "core/error.h"

namespace chorus::train {

std::vector<int32_t> speech_prompt(const data::Tokenizer& tok, const std::string& lang) {
  return {static_cast<int32_t>(tok.special("<|startoftranscript|>")),
          static_cast<int32_t>(tok.special("<|" + lang + "|>")), static_cast<int32_t>(tok.special("<|transcribe|>")),
          static_cast<int32_t>(tok.special("<|notimestamps|>"))};
}

std::vector<int32_t> ctc_labels(const data::Tokenizer& tok, std::span<const uint32_t> text) {
  const std::string bytes = tok.decode(text);
  std::vector<int32_t> out(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) out[i] = static_cast<int32_t>(static_cast<unsigned char>(bytes[i])) + 1;
  return out;
}

SpeechItem make_item(const audio::LogMel& mel, const std::vector<float>& pcm, int max_frames) {
  SpeechItem it;
  const size_t max_samples = static_cast<size_t>(max_frames) * mel.config().hop;
  const size_t n = std::min(pcm.size(), max_samples);
  it.n_frames = std::max(1, mel.n_frames(n));
  it.feats.assign(static_cast<size_t>(it.n_frames) * mel.n_mels(), 0.0f);
  if (mel.n_frames(n) > 0) mel.compute(pcm.data(), n, it.feats.data());
  return it;
}

void build_batch(const std::vector<SpeechItem>& items, const data::Tokenizer& tok, int n_mels, int max_tokens,
                 models::SpeechBatch& b) {
  const int B = static_cast<int>(items.size());
  CHORUS_CHECK(B > 0, "build_batch: no clips");
  b.B = B;
  b.F = 0;
  b.T = 0;
  for (const auto& it : items) {
    b.F = std::max(b.F, it.n_frames);
    b.T = std::max(b.T, std::min(max_tokens, static_cast<int>(it.text.size()) + 4));  // prompt + text + end - 1
  }
  b.feats.assign(static_cast<size_t>(B) * b.F * n_mels, 0.0f);
  b.n_frames.resize(B);
  const int32_t eot = static_cast<int32_t>(tok.eot());
  b.tokens.assign(static_cast<size_t>(B) * b.T, eot);
  b.targets.assign(b.tokens.size(), -1);
  b.byte_off.assign(b.tokens.size(), -1);
  b.ctc_targets.clear();
  b.ctc_off.resize(B);
  b.ctc_len.resize(B);
  for (int i = 0; i < B; ++i) {
    const SpeechItem& it = items[i];
    std::copy(it.feats.begin(), it.feats.end(), b.feats.begin() + static_cast<size_t>(i) * b.F * n_mels);
    b.n_frames[i] = it.n_frames;
    std::vector<int32_t> seq = speech_prompt(tok, it.lang);
    for (uint32_t t : it.text) seq.push_back(static_cast<int32_t>(t));
    seq.push_back(eot);
    const int n = std::min(static_cast<int>(seq.size()) - 1, b.T);
    for (int t = 0; t < n; ++t) {
      b.tokens[static_cast<size_t>(i) * b.T + t] = seq[t];
      // position 0 predicts the language; 1 and 2 the task tokens (no loss)
      if (t != 1 && t != 2) b.targets[static_cast<size_t>(i) * b.T + t] = seq[t + 1];
    }
    // Position 3 + j predicts text token j (the last: <|endoftext|>): the bytes before it.
    int before = 0;
    for (size_t j = 0; j <= it.text.size() && 3 + static_cast<int>(j) < n; ++j) {
      b.byte_off[static_cast<size_t>(i) * b.T + 3 + j] = before;
      if (j < it.text.size()) before += static_cast<int>(tok.token_bytes(it.text[j]).size());
    }
    b.ctc_off[i] = static_cast<int>(b.ctc_targets.size());
    for (int32_t c : ctc_labels(tok, it.text)) b.ctc_targets.push_back(c);
    b.ctc_len[i] = static_cast<int>(b.ctc_targets.size()) - b.ctc_off[i];
  }
}

}  // namespace chorus::train
