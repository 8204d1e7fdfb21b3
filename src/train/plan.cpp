#include "train/plan.h"

#include <unistd.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/meminfo.h"
#include "core/strfmt.h"
#include "dist/communicator.h"
#include "optim/distributed.h"
#include "train/finetune_speech.h"
#include "train/pretrain.h"
#include "train/run_clock.h"

namespace chorus::train {

namespace {

constexpr double kMiB = 1.0 / (1 << 20);

// Adam state of the rank with the largest slice (ZeRO-1 rank 0; the chunks differ by one float at most).
size_t largest_optimizer_bytes(size_t n_params, const Layout& l) {
  const optim::Range r = optim::owned_range(n_params, l.zero, l.dp, 0);
  return optim::adam_state_bytes(r.end - r.begin);
}

// "512.0 MiB", "48.1 GiB": sizes of any magnitude stay readable.
std::string size_text(double bytes) {
  return bytes < double(1 << 30) ? strfmt("%.1f MiB", bytes * kMiB) : strfmt("%.1f GiB", bytes / double(1 << 30));
}

void check_layout(const Layout& l) {
  CHORUS_CHECK(l.dp >= 1, "dp: must be >= 1, got %d", l.dp);
  CHORUS_CHECK(l.tp >= 1, "tp: must be >= 1, got %d", l.tp);
  CHORUS_CHECK(l.zero == 0 || l.zero == 1, "zero: must be 0 or 1, got %d", l.zero);
}

std::string gpt_name(const models::GptConfig& c) {
  std::string name =
      strfmt("GPT L%d d%d h%d vocab %d context %d", c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.context);
  if (!c.is_gpt2()) name.append(" ").append(c.arch_name());
  return name;
}

}  // namespace

double pretrain_flops_per_step(const models::GptConfig& cfg, int seq_len, double tokens_per_step) {
  return models::gpt_flops_per_token(cfg, seq_len) * tokens_per_step;
}

double speech_flops_per_step(const models::SpeechSeq2SeqConfig& cfg, double avg_frames, int max_tokens,
                             double clips_per_step, bool with_decoder) {
  const double enc = models::speech_encoder_flops(cfg.encoder, models::SpeechSeq2SeqConfig::kCtcVocab, 1,
                                                  static_cast<int>(avg_frames));
  const double dec = models::gpt_flops_per_token(cfg.decoder, max_tokens,
                                                 models::decoder_cross(cfg, cfg.encoder.max_frames)) *
                     max_tokens / 2;
  return (enc + (with_decoder ? dec : 0.0)) * clips_per_step;
}

JobPlan plan_pretrain(const PretrainOptions& o, const Layout& layout) {
  check_layout(layout);
  JobPlan p;
  p.layout = layout;
  p.model = gpt_name(o.model);
  p.memory = models::gpt_memory(o.model, o.batch, o.seq_len, layout.tp, layout.precision);
  p.n_params = p.memory.master_bytes / sizeof(float);
  p.n_flop_params = models::gpt_flop_params(o.model);
  p.optimizer_bytes = largest_optimizer_bytes(p.n_params, layout);
  p.items_per_step = static_cast<double>(o.batch) * o.seq_len * o.train.grad_accum * layout.dp;
  p.flops_per_step = pretrain_flops_per_step(o.model, o.seq_len, p.items_per_step);
  p.work = strfmt("batch %d x seq %d x accum %d x dp %d", o.batch, o.seq_len, o.train.grad_accum, layout.dp);
  return p;
}

JobPlan plan_finetune_speech(const FinetuneSpeechOptions& o, const models::SpeechSeq2SeqConfig& cfg,
                             const Layout& layout, double avg_frames) {
  check_layout(layout);
  const auto& e = cfg.encoder;
  JobPlan p;
  p.layout = layout;
  p.model = strfmt("speech encoder L%d d%d h%d (%d mels, up to %d frames) + %s decoder", e.n_layer, e.n_embd,
                   e.n_head, e.n_mels, e.max_frames, gpt_name(cfg.decoder).c_str());
  p.memory = models::speech_seq2seq_memory(cfg, o.batch, e.max_frames, o.max_tokens, layout.tp, layout.precision);
  p.n_params = p.memory.master_bytes / sizeof(float);
  p.optimizer_bytes = largest_optimizer_bytes(p.n_params, layout);
  const double clips = static_cast<double>(o.batch) * o.train.grad_accum * layout.dp;
  p.items_per_step = avg_frames * clips;
  p.item_unit = "frames";
  p.flops_per_step = speech_flops_per_step(cfg, avg_frames, o.max_tokens, clips);
  p.n_flop_params = 0;
  p.work = strfmt("batch %d clips (%.0f frames on average, up to %d) x accum %d x dp %d, %d decoder positions",
                  o.batch, avg_frames, e.max_frames, o.train.grad_accum, layout.dp, o.max_tokens);
  return p;
}

void check_plan_fits(const JobPlan& plan, double max_memory_gib, dist::Communicator& world, const std::string& job,
                     const std::string& flags) {
  CHORUS_CHECK(max_memory_gib >= 0, "max-memory: must be >= 0 (0 = what the machine has), got %g", max_memory_gib);
  double share = 0.0;  // bytes a rank may hold
  std::string source;
  if (max_memory_gib > 0) {
    share = max_memory_gib * (1 << 30);
    source = strfmt("--max-memory %g GiB per rank", max_memory_gib);
  } else {
    // Ranks on one host share its memory: count them by a hash of the host name.
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    const uint64_t mine = std::hash<std::string>{}(host);
    std::vector<uint64_t> all(static_cast<size_t>(world.size()));
    world.all_gather(&mine, all.data(), all.size(), dist::DType::u64);
    const auto local = std::count(all.begin(), all.end(), mine);
    const uint64_t avail = memory_available();
    if (avail == 0) share = -1.0;  // unknown here: no check on this rank
    else share = static_cast<double>(avail) / static_cast<double>(local);
    source = strfmt("MemAvailable %.1f GiB of /proc/meminfo shared by %lld rank%s on this host",
                    static_cast<double>(avail) / (1 << 30), static_cast<long long>(local), local == 1 ? "" : "s");
  }
  // Every rank decides alike: on the smallest share of any rank (an unknown one counts as enough).
  const double smallest =
      world.all_reduce_scalar(share < 0 ? std::numeric_limits<double>::max() : share, dist::ReduceOp::min);
  const double need = static_cast<double>(plan.total_bytes());
  if (need <= smallest) return;
  const models::GptMemory& m = plan.memory;
  // Every rank throws this together: one report, and the ranks end normally.
  throw AgreedError(strfmt(
      "%s does not fit in memory: each rank needs %s (parameters %s, gradients %s, optimizer %s, activations %s; "
      "%s, %s, dp %d x tp %d, zero %d, %s) but may use %s (%s%s); reduce %s (`chorus plan` with the same flags "
      "shows the sizes)",
      job.c_str(), size_text(need).c_str(), size_text(double(m.master_bytes + m.compute_weight_bytes)).c_str(),
      size_text(double(m.grad_bytes)).c_str(), size_text(double(plan.optimizer_bytes)).c_str(),
      size_text(double(m.activation_bytes)).c_str(), plan.model.c_str(), plan.work.c_str(), plan.layout.dp,
      plan.layout.tp, plan.layout.zero, precision_name(plan.layout.precision), size_text(smallest).c_str(),
      source.c_str(), max_memory_gib > 0 ? "" : "; --max-memory sets a rank's share", flags.c_str()));
}

std::string describe_plan(const JobPlan& p, double gflops_per_rank, const std::string& gflops_source, double mfu,
                          int64_t steps) {
  const models::GptMemory& m = p.memory;
  const char* prec = precision_name(p.layout.precision);
  std::string s;
  s += strfmt("model: %s: %.2fM parameters per rank", p.model.c_str(), p.n_params / 1e6);
  if (p.n_flop_params > 0) s += strfmt(" (%.2fM for FLOPs)", p.n_flop_params / 1e6);
  s += strfmt("\nlayout: dp %d x tp %d = %d rank%s, zero %d, precision %s; %s = %.0f %s per step\n", p.layout.dp,
              p.layout.tp, p.layout.world(), p.layout.world() == 1 ? "" : "s", p.layout.zero, prec, p.work.c_str(),
              p.items_per_step, p.item_unit);
  s += strfmt("memory per rank: fp32 master weights %.1f MiB, %s compute copy %.1f MiB, fp32 grads %.1f MiB, Adam "
              "state %.1f MiB%s, activations (%s) %.1f MiB; total %.1f MiB\n",
              m.master_bytes * kMiB, prec, m.compute_weight_bytes * kMiB, m.grad_bytes * kMiB,
              p.optimizer_bytes * kMiB, p.layout.zero ? " (ZeRO-1 slice)" : "", prec, m.activation_bytes * kMiB,
              p.total_bytes() * kMiB);
  s += strfmt("flops: %.4g per step (%.4g per %s)\n", p.flops_per_step, p.flops_per_step / p.items_per_step,
              p.item_unit == std::string("tokens") ? "token" : "frame");
  const double secs = p.step_seconds(gflops_per_rank, mfu);
  s += strfmt("step time: about %.3g s at %.1f GFLOP/s per rank (%s) and MFU %.0f%% (--assume-mfu); %.0f %s/s",
              secs, gflops_per_rank, gflops_source.c_str(), 100 * mfu, p.items_per_step / secs, p.item_unit);
  if (steps > 0) s += strfmt("; %lld steps (--steps) in about %s", static_cast<long long>(steps),
                             format_duration(secs * static_cast<double>(steps)).c_str());
  return s;
}

}  // namespace chorus::train
