// The joint speech recogniser (DESIGN.md "Speech model"): SpeechEncoder + a
// Gpt decoder with cross-attention, in one fp32 parameter buffer
// [encoder.* | decoder.*] so the optimizer, ZeRO and checkpoints see one flat
// model. Loss = attention cross-entropy on the transcript (and the language
// token) + ctc_weight x the encoder's CTC loss.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cpu/buffer.h"
#include "models/gpt/gpt.h"
#include "models/speech/encoder.h"

namespace chorus::models {

// The decoder's CTC alignment prior (nn::ctc_alignment_prior): every
// position's cross-attention gets log(prior + floor) added to the scores of
// the first n_heads heads of every layer, the prior being where the CTC head
// puts the frames after the transcript bytes before that position's target
// (the true ones in training, the hypothesis' in decoding). Part of the model:
// recorded in the checkpoint, applied by transcribe / evaluate.
struct CtcPriorConfig {
  bool enabled = false;
  int window = 8;        // memory rows after the prefix that the prior covers
  float floor = 0.01f;   // added to the prior before the log: how far outside it attention may still go
  int n_heads = 0;       // heads per layer (0 = all)
  nlohmann::json to_json() const;
  bool operator==(const CtcPriorConfig&) const = default;
};

struct SpeechSeq2SeqConfig {
  SpeechEncoderConfig encoder;
  GptConfig decoder;
  CtcPriorConfig prior;
  // The CTC head predicts UTF-8 bytes (kCtcVocab classes: blank 0, byte b as
  // b + 1): language-independent, and 32x cheaper than the BPE vocabulary.
  static constexpr int kCtcVocab = 257;
  static constexpr int kCtcBlank = 0;
  // model_extra of a checkpoint manifest: {"encoder": {...}, "ctc": "bytes"}
  // (+ "ctc_prior": {...} when the prior is on)
  nlohmann::json extra_json() const;
  static SpeechSeq2SeqConfig from_manifest(const GptConfig& decoder, const nlohmann::json& extra,
                                           const std::string& where);
};

// The decoder's cross-attention: to the encoder's memory of a clip of up to max_frames frames.
inline CrossAttentionConfig decoder_cross(const SpeechSeq2SeqConfig& cfg, int max_frames) {
  return {cfg.encoder.n_embd, cfg.encoder.out_len(max_frames)};
}

// What a SpeechSeq2Seq(cfg, max_batch, max_frames, max_tokens, a TP group of
// tp_size ranks, precision) holds on each rank, without allocating (see
// models::gpt_memory): SpeechSeq2Seq::memory() of the built model.
GptMemory speech_seq2seq_memory(const SpeechSeq2SeqConfig& cfg, int max_batch, int max_frames, int max_tokens,
                                int tp_size, Precision precision);

// One batch of the recogniser.
struct SpeechBatch {
  int B = 0, F = 0, T = 0;
  std::vector<float> feats;        // (B, F, n_mels)
  std::vector<int> n_frames;       // (B)
  std::vector<int32_t> tokens;     // (B, T) decoder input
  std::vector<int32_t> targets;    // (B, T) next token, -1 = no loss
  std::vector<int32_t> ctc_targets;  // transcript bytes + 1 of every clip, concatenated
  std::vector<int> ctc_off, ctc_len;  // (B)
  // (B, T) transcript bytes before each position's target (all of them for
  // <|endoftext|>), -1 where there is no transcript target: the prefix whose
  // CTC alignment prior that position's cross-attention gets.
  std::vector<int> byte_off;
};

struct SpeechLosses {
  float att = 0.0f;  // mean cross-entropy per target token
  float ctc = 0.0f;  // mean CTC loss per transcript token
  int ctc_infeasible = 0;
};

class SpeechSeq2Seq {
 public:
  SpeechSeq2Seq(const SpeechSeq2SeqConfig& cfg, int max_batch, int max_frames, int max_tokens,
                dist::Communicator* tp, Precision precision);
  const SpeechSeq2SeqConfig& config() const { return cfg_; }
  void init_weights(uint64_t seed);
  SpeechEncoder& encoder() { return *encoder_; }
  Gpt& decoder() { return *decoder_; }
  const SpeechEncoder& encoder() const { return *encoder_; }
  const Gpt& decoder() const { return *decoder_; }
  std::span<float> params();
  std::span<float> grads();
  const std::vector<ParamSpec>& param_table() const { return table_; }
  size_t encoder_params() const { return n_encoder_; }  // encoder.* is [0, n); decoder.* after
  void zero_grad();
  GptMemory memory() const;
  // Forward and (train) backward of loss_scale * (att + ctc_weight * ctc). Collective over TP.
  // with_decoder false: the encoder and its CTC loss only (att = 0; the decoder
  // is not run and gets no gradient), for CTC-only warm-up steps. With
  // config().prior on, the decoder's cross-attention gets the CTC alignment
  // prior of b.byte_off (ctc_prior).
  SpeechLosses forward(const SpeechBatch& b, float ctc_weight, bool with_decoder = true);
  // The CTC alignment prior of batch b's positions from the last encoder
  // forward's CTC log-probabilities, into prior (B, T, S) (what forward gives
  // the decoder when config().prior is on).
  void ctc_prior(const SpeechBatch& b, std::vector<float>& prior) const;
  void backward(float loss_scale, float ctc_weight);

 private:
  SpeechSeq2SeqConfig cfg_;
  std::unique_ptr<SpeechEncoder> encoder_;
  std::unique_ptr<Gpt> decoder_;
  backend::cpu::AlignedBuffer params_, grads_;
  std::vector<ParamSpec> table_;
  size_t n_encoder_ = 0;
  std::vector<float> prior_;  // (B, T, S) the last forward's cross-attention prior
  const SpeechBatch* last_ = nullptr;
  bool last_with_decoder_ = true;
};

}  // namespace chorus::models
