// Decoding policy for the speech recogniser (apart from the model math, as
// whisper.cpp keeps it): batched greedy or beam search over the decoder's KV
// cache (cost linear in output length), the language given or detected from
// the distribution over language tokens after <|startoftranscript|>, joint
// CTC/attention scoring (CTC prefix scores during the search), and a guard against
// repetition loops. One rank (TP = 1).
#pragma once

#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "models/speech/seq2seq.h"

namespace chorus::train {

struct DecodeOptions {
  std::string lang;         // "" = detect
  int beam = 1;             // 1 = greedy
  int max_new_tokens = 120;
  int min_new_tokens = 0;   // <|endoftext|> suppressed before this many tokens (benchmarks: a fixed length)
  // Joint CTC/attention decoding (Watanabe et al. 2017): hypotheses grow from
  // the attention decoder's candidates and are ranked by (1 - w) x attention +
  // w x CTC prefix log-probability; finished ones by the full CTC likelihood.
  // 0 = attention only.
  float ctc_weight = 0.3f;
  int max_repeat_ngram = 3; // stop when the last n-gram (n = 1..4) has repeated this many times in a row
};

struct Transcript {
  std::string lang;
  std::string text;
  std::vector<uint32_t> tokens;
  double avg_logprob = 0.0;  // attention log-probability per token
  bool loop_stopped = false; // the repetition guard ended it
};

// Where decoding's time goes (added to by transcribe_batch): the encoder
// (log-mel in, memory and CTC log-probabilities out) and the autoregressive
// decoder (every decode step, beam bookkeeping and CTC prefix scoring).
struct DecodeTiming {
  double encoder_s = 0.0;
  double decoder_s = 0.0;
};

// Transcribes a batch (b.feats / n_frames; tokens unused). languages: the
// codes detection may choose from ("" entries ignored; empty = every
// language of the tokenizer). timing (nullable) accumulates the split.
std::vector<Transcript> transcribe_batch(models::SpeechSeq2Seq& model, const data::Tokenizer& tok,
                                         const models::SpeechBatch& b, const DecodeOptions& opt,
                                         const std::vector<std::string>& languages = {},
                                         DecodeTiming* timing = nullptr);

// The CTC head's greedy (best path) transcripts of a batch, bytes as decoded
// (a diagnostic of the encoder alone: no decoder is run).
std::vector<std::string> ctc_greedy_batch(models::SpeechSeq2Seq& model, const models::SpeechBatch& b);

}  // namespace chorus::train
