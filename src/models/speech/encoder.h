// The speech encoder (Whisper's AudioEncoder, Radford et al. 2022) with an
// auxiliary CTC head (Graves et al. 2006; joint CTC/attention training as in
// Kim, Hori & Watanabe 2017):
//   log-mel (B, F, n_mels) -> Conv1d(k3, pad 1) + GELU -> Conv1d(k3, stride 2,
//   pad 1) + GELU -> + sinusoidal positions -> n_layer pre-LN Transformer
//   blocks (bidirectional self-attention over the valid frames, GELU MLP 4d)
//   -> LayerNorm ln_post = the memory (B, S, d) the decoder cross-attends to,
//   S = ceil(F / 2) (50 rows per second); with subsample 4 the first Conv1d
//   has stride 2 as well, S = ceil(ceil(F / 2) / 2) (25 rows per second, the
//   4x subsampling of ESPnet / NeMo encoders: half the blocks' work per second
//   of audio); CTC head: Linear(d -> ctc_vocab) on the memory (the joint
//   model uses UTF-8 bytes + blank, models/speech/seq2seq.h), at 50 frames
//   per second whatever the subsampling (ctc_upsample).
// Padding is exact: frames past a clip's length are masked out of every
// attention and of the CTC loss, and the convolutions pad with zeros as the
// padded features are, so a clip's outputs do not depend on its batch.
//
// Layout as models/gpt: one fp32 parameter buffer (or the caller's, see
// adopt_storage), a table with names, shapes and TP splits, one activation
// buffer sized at construction, activations in the compute dtype. Tensor
// parallel as the GPT: QKV / MLP-up column-parallel, attention-out / MLP-down
// row-parallel; the conv stem, LayerNorms and the CTC head are replicated.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "models/gpt/gpt.h"

namespace chorus::dist {
class Communicator;
}

namespace chorus::models {

struct SpeechEncoderConfig {
  int n_mels = 80;
  int n_layer = 4;
  int n_embd = 256;      // d
  int n_head = 4;
  int max_frames = 3000;  // input frames (10 ms each) at most: 30 s
  int subsample = 2;      // input frames per memory row: 2 (Whisper's) or 4
  int conv1_stride() const { return subsample / 2; }
  // CTC frames per memory row: the CTC head always predicts at 50 frames per
  // second (20 ms), so with subsample 4 each row's head emits 2 frames of
  // logits (output upsampling): UTF-8 bytes of Cyrillic speech (~30 per second)
  // would not fit in 25 frames per second.
  int ctc_upsample() const { return subsample / 2; }
  // Memory rows of a clip of n_frames feature frames (each stride-2 conv: ceil(n / 2)).
  int out_len(int n_frames) const {
    const int n1 = conv1_stride() == 2 ? (n_frames + 1) / 2 : n_frames;
    return (n1 + 1) / 2;
  }
  int n_ctx() const { return out_len(max_frames); }  // memory rows at most
  void validate() const;  // throws chorus::Error naming the field
  nlohmann::json to_json() const;
  static SpeechEncoderConfig from_json(const nlohmann::json& j, const std::string& where);
  bool operator==(const SpeechEncoderConfig&) const = default;
};

// What a SpeechEncoder(cfg, ctc_vocab, ctc_blank, max_batch, max_frames, a TP
// group of tp_size ranks, precision) holds on each rank, from the same tables
// its constructor uses, without allocating (see models::gpt_memory).
GptMemory speech_encoder_memory(const SpeechEncoderConfig& cfg, int ctc_vocab, int ctc_blank, int max_batch,
                                int max_frames, int tp_size, Precision precision);
// SpeechEncoder::flops(B, F) of such an encoder.
double speech_encoder_flops(const SpeechEncoderConfig& cfg, int ctc_vocab, int B, int F);

class SpeechEncoder {
 public:
  // ctc_vocab: CTC head rows (classes incl. the blank); ctc_blank the
  // blank label; max_batch x max_frames the largest batch.
  SpeechEncoder(const SpeechEncoderConfig& cfg, int ctc_vocab, int ctc_blank, int max_batch, int max_frames,
                dist::Communicator* tp, Precision precision);
  ~SpeechEncoder();
  SpeechEncoder(const SpeechEncoder&) = delete;
  SpeechEncoder& operator=(const SpeechEncoder&) = delete;

  const SpeechEncoderConfig& config() const { return cfg_; }
  // Conv weights N(0, 1/fan_in), Linear weights N(0, 0.02) (residual
  // projections 0.02/sqrt(2L)), biases 0, LayerNorm gains 1. The same global
  // model for any TP degree.
  void init_weights(uint64_t seed);
  std::span<float> params();
  std::span<float> grads();
  const std::vector<ParamSpec>& param_table() const;  // names without the "encoder." prefix
  size_t n_params() const;
  void adopt_storage(float* params, float* grads);
  void zero_grad();
  GptMemory memory_use() const;
  // Training FLOPs of a batch of B clips of F frames (forward + backward).
  double flops(int B, int F) const;

  // feats (B, F, n_mels) fp32 (padded rows zero), n_frames (B) valid frames.
  // Computes the memory and the CTC logits. Collective over TP.
  void forward(const float* feats, const int* n_frames, int B, int F);
  // The last forward's memory (B, S, d) in the compute dtype, its valid rows
  // per clip (B), S, and an fp32 copy (inference).
  const void* memory() const;
  const int* memory_len() const;
  int memory_rows() const;
  void memory_f32(float* out) const;
  // CTC loss of the last forward: targets of clip b are targets[tgt_off[b] ..
  // + tgt_len[b]]. Returns the mean over clips of -log p / max(1, target
  // length) (per token, like the attention loss) and keeps grad_scale * its
  // gradient for backward. Clips whose targets cannot align (audio too short)
  // count 0, get no gradient and are counted in n_infeasible.
  float ctc_loss(const int32_t* targets, const int* tgt_off, const int* tgt_len, float grad_scale,
                 int* n_infeasible = nullptr);
  // CTC frames (20 ms each) of the last forward: per clip (B) and in all
  // (ctc_upsample() x memory rows).
  const int* ctc_len() const;
  int ctc_rows() const;
  // CTC log-probabilities (ctc_rows(), V) fp32 of clip b (inference; rows
  // past ctc_len()[b] are padding).
  void ctc_log_probs(int b, float* out) const;
  int ctc_vocab() const;
  int ctc_blank() const;
  // Backward of the CTC loss (as scaled in ctc_loss; with_ctc false: none)
  // plus a loss whose gradient w.r.t. the memory is dmemory ((B, S, d) in the
  // compute dtype; nullptr: none). Accumulates into grads().
  void backward(const void* dmemory, bool with_ctc);

 private:
  template <typename T>
  void forward_typed(const float* feats);
  template <typename T>
  void backward_typed(const void* dmemory, bool with_ctc);
  SpeechEncoderConfig cfg_;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace chorus::models
