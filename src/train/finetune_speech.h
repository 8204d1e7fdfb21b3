// Speech fine-tuning (DESIGN.md "Speech model"): a TrainTask (train/loop.h)
// of the joint encoder-decoder on HDF5 speech shards. Each clip becomes
// log-mel features (SpecAugment in training, drawn from (seed, global sample
// index) so resume is exact) and the decoder sequence
//   <|startoftranscript|> <|xx|> <|transcribe|> <|notimestamps|> text... <|endoftext|>
// with loss on the language token, the transcript and <|endoftext|> (not on
// the two task tokens), plus ctc_weight x the encoder's CTC loss on the
// transcript. The decoder starts from a pretrained GPT (--init-decoder) or
// from random weights ("none"). The encoder and cross-attention train at
// lr x new_lr_scale, the pretrained decoder at lr x decoder_lr_scale and not
// at all for the first freeze_decoder_steps steps. The first ctc_only_steps
// steps train the encoder on the CTC loss alone (the decoder is not run: a
// cheaper step that aligns the encoder before the cross-attention learns to
// read it). Validation: loss and, with
// TP = 1, greedy-decoding CER/WER on the first val clips.
#pragma once

#include <string>

#include "audio/spec_augment.h"
#include "data/tokenizer.h"
#include "models/speech/seq2seq.h"
#include "train/loop.h"

namespace chorus::train {

struct FinetuneSpeechOptions {
  models::SpeechEncoderConfig encoder;
  std::string tokenizer_path;
  std::string data_dir;             // train_*.h5 / val_*.h5 speech shards (prepare-speech)
  std::string init_decoder;         // GPT weights file, run directory or checkpoint; "none" = random
  // A trained speech model (run directory or checkpoint) to continue from:
  // its encoder, decoder and CTC head, with a fresh optimizer and step 0 (the
  // encoder shape comes from it). With init_decoder as well, only its encoder
  // and CTC head; the decoder comes from init_decoder (a GPT, or "none").
  std::string init_from;
  models::GptConfig decoder_if_random;  // the decoder's config with init_decoder "none" (vocab: the tokenizer's)
  models::CtcPriorConfig prior;     // the decoder's CTC alignment prior (with init_from: enabled replaces the model's)
  int batch = 8;                    // clips per micro-batch per DP rank
  int max_tokens = 128;             // decoder positions per clip (prompt + transcript + end)
  float ctc_weight = 0.3f;          // joint CTC/attention weight
  double temperature = 1.0;         // language balancing (data/speech_sampler.h)
  int bucket_batches = 1;           // length bucketing over pools of this many batches (1 = off)
  int64_t freeze_decoder_steps = 0;
  int64_t ctc_only_steps = 0;       // the first N steps: encoder + CTC only, the decoder neither run nor updated
  float decoder_lr_scale = 1.0f;    // pretrained decoder tensors
  // With --optimizer muon, the hidden matrices Muon updates: "all" (encoder,
  // cross-attention and the pretrained decoder's blocks), "new" (encoder and
  // cross-attention; the pretrained blocks keep AdamW) or "encoder".
  std::string muon_scope = "all";
  float new_lr_scale = 1.0f;        // encoder + cross-attention
  bool spec_augment = true;
  audio::SpecAugmentConfig augment;
  int eval_batches = 4;             // validation loss micro-batches
  int eval_clips = 64;              // clips decoded for val CER (0 = none)
  TrainOptions train;
};

struct FinetuneSpeechResult : TrainResult {
  std::string weights_path;  // the last checkpoint holds the weights (speech models have no model.h5 yet)
};

FinetuneSpeechResult finetune_speech(const FinetuneSpeechOptions& opt);

// Where the decoder comes from, read without exporting anything: the header
// of a GPT weights file (or of a run directory's model.h5) or a checkpoint's
// manifest (file: that file, with its tokenizer hash); with init_decoder
// "none", decoder_if_random with vocab_if_random tokens (file empty).
struct DecoderSource {
  models::GptConfig config;
  std::string file;
  std::string tokenizer_hash;
};
DecoderSource decoder_source(const FinetuneSpeechOptions& o, int vocab_if_random);

// Loads the weights (not the optimizer state) of the speech checkpoint `dir`
// into model, under the grid's TP layout (collective over the grid; any saved
// layout). Refuses another tokenizer or model shape.
void load_speech_weights(dist::ParallelGrid& grid, const std::string& dir, models::SpeechSeq2Seq& model,
                         const std::string& tokenizer_hash);

// Loads the weights of the speech checkpoint `dir`, trained with a tokenizer
// of old_vocab tokens that `tok` extends (Tokenizer::with_language), into
// model (built with tok's vocabulary): every tensor as saved, except the
// decoder's embedding, whose rows of the new tokens start at the mean of the
// old language tokens' rows (so a new language token starts as "a language").
// Collective over the grid; any saved layout.
void load_speech_weights_grown(dist::ParallelGrid& grid, const std::string& dir, models::SpeechSeq2Seq& model,
                               const data::Tokenizer& tok, int old_vocab);

// The config of the speech checkpoint at path (run directory or checkpoint),
// its directory in dir_out; refuses a checkpoint that is not a speech model.
models::SpeechSeq2SeqConfig speech_checkpoint_config(const std::string& path, std::string* dir_out,
                                                     std::string* tokenizer_hash_out = nullptr);

}  // namespace chorus::train
