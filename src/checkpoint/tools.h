// Offline checkpoint tools behind `chorus checkpoint inspect | verify | hash |
// reshard | export` (one process; docs/CHECKPOINTS.md). `path` arguments
// accept a checkpoint directory or a save directory with `latest`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "checkpoint/layout.h"
#include "checkpoint/manifest.h"
#include "core/dtype.h"

namespace chorus::checkpoint {

// A human-readable report: step, tokens, model, tokenizer, layout, schedule,
// optimizer, loss scaler, files with sizes and digests; every tensor with its
// global shape and split when list_tensors.
std::string inspect(const std::string& path, bool list_tensors);

// Checks the manifest, every file's size and SHA-256, and every tensor's
// shape, slice and coverage. Returns one line per problem (empty: all good);
// *dir gets the resolved checkpoint directory.
std::vector<std::string> verify(const std::string& path, std::string* dir = nullptr);

// One SHA-256 over the global model parameters, independent of the layout
// they were saved under: tensors in name order, each as its name, a 0 byte,
// the dimension count (u64) and dimensions (i64), then its float32 values
// (all little-endian). with_optimizer adds the global Adam moments (as tensors
// "exp_avg/<name>", "exp_avg_sq/<name>"). `path` may also be a weights file
// (model.h5 or an export), which gives the same digest as its checkpoint.
// prefix: only the tensors whose names start with it, named without it (so a
// speech model's "decoder.h.0." part digests as a GPT's "h.0."); refused when
// no tensor matches.
std::string hash(const std::string& path, bool with_optimizer, const std::string& prefix = "");

// Rewrites the checkpoint at src for another layout into out (a new
// checkpoint directory, written as out.tmp and renamed). RNG states are kept
// when the world size is unchanged and dropped otherwise (a resumed run then
// re-seeds them). Returns the new manifest.
Manifest reshard(const std::string& src, const std::string& out, const Layout& target);

// Writes the global weights as a weights file (checkpoint/weights.h format,
// what `chorus generate --weights` and the speech fine-tune read).
void export_weights(const std::string& src, const std::string& out);
// Writes <out_dir>/model.safetensors with GPT-2's tensor names and layout
// (Hugging Face GPT2Model keys: wte.weight with the real vocabulary rows,
// wpe.weight, h.N.ln_1.weight, h.N.attn.c_attn.weight as (in, out) like
// GPT-2's Conv1D, ...; float32) and <out_dir>/config.json (GPT-2 style).
// dtype fp32 (tensors "F32") or bf16 ("BF16", rounded to nearest even from the
// fp32 masters: half the size, what PyTorch / Hugging Face load for bf16
// inference or fine-tuning).
//
// With `tokenizer`, its files (tokenizer.json, tokenizer_config.json in the
// Hugging Face format, rendered by the caller from data/hf_tokenizer.h) are
// written next to the weights; a tokenizer whose hash is not the checkpoint's
// is refused before anything is written.
struct ExportTokenizer {
  std::string hash;    // the tokenizer's identity (data::Tokenizer::hash())
  std::string source;  // where it came from, for messages
  std::vector<std::pair<std::string, std::string>> files;  // file name in out_dir -> contents
};
void export_safetensors(const std::string& src, const std::string& out_dir, Precision dtype = Precision::fp32,
                        const ExportTokenizer* tokenizer = nullptr);

}  // namespace chorus::checkpoint
