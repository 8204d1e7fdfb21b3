// Turning speech clips into model batches (train/finetune_speech.h), shared
// by fine-tuning, transcribe and evaluate: features, the decoder prompt and
// targets, CTC targets.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "audio/mel.h"
#include "audio/spec_augment.h"
#include "core/rng.h"
#include "data/tokenizer.h"
#include "models/speech/seq2seq.h"

namespace chorus::train {

// The four prompt tokens for language `lang` (throws naming a language the
// tokenizer lacks).
std::vector<int32_t> speech_prompt(const data::Tokenizer& tok, const std::string& lang);

struct SpeechItem {
  std::vector<float> feats;    // (frames, n_mels)
  int n_frames = 0;
  std::string lang;
  std::vector<uint32_t> text;  // transcript tokens
};

// CTC labels of a transcript: its UTF-8 bytes, byte b as label b + 1 (0 = blank).
std::vector<int32_t> ctc_labels(const data::Tokenizer& tok, std::span<const uint32_t> text);

// Log-mel of 16 kHz samples, at most max_frames frames (longer audio is cut).
SpeechItem make_item(const audio::LogMel& mel, const std::vector<float>& pcm, int max_frames);

// Pads items into one batch: features to the longest clip, decoder
// sequences (prompt + text + <|endoftext|>, cut to max_tokens) to the longest.
void build_batch(const std::vector<SpeechItem>& items, const data::Tokenizer& tok, int n_mels, int max_tokens,
                 models::SpeechBatch& out);

}  // namespace chorus::train
