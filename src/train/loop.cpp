#include "train/loop.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <thread>
#include <vector>

#include "backend/cpu/gemm.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/peak_flops.h"
#include "backend/cpu/workspace.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/fsync.h"
#include "core/json_number.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "dist/watchdog.h"
#include "optim/distributed.h"
#include "optim/schedule.h"
#include "train/metrics.h"
#include "train/run_clock.h"
#include "train/run_dir.h"

namespace chorus::train {

namespace fs = std::filesystem;

void TrainOptions::validate() const {
  const auto ll = [](int64_t v) { return static_cast<long long>(v); };
  CHORUS_CHECK(grad_accum >= 1, "grad-accum: must be >= 1, got %d", grad_accum);
  CHORUS_CHECK(batch_warmup >= 0, "batch-warmup: must be >= 0 (0 = off), got %lld", ll(batch_warmup));
  CHORUS_CHECK(batch_warmup == 0 || grad_accum > 1,
               "batch-warmup: ramps the micro-batches per step from 1 to --grad-accum, so it needs --grad-accum > 1 "
               "(got --grad-accum %d)", grad_accum);
  CHORUS_CHECK(steps >= 1, "steps: must be >= 1, got %lld", ll(steps));
  CHORUS_CHECK(eval_every >= 0, "eval-every: must be >= 0, got %lld", ll(eval_every));
  CHORUS_CHECK(log_every >= 1, "log-every: must be >= 1, got %d", log_every);
  CHORUS_CHECK(max_memory_gib >= 0, "max-memory: must be >= 0 (0 = what the machine has), got %g", max_memory_gib);
  CHORUS_CHECK(rank_stats_every >= 0, "rank-stats-every: must be >= 0 (0 = off), got %lld", ll(rank_stats_every));
  CHORUS_CHECK(!run_dir.empty(), "run-dir: must be set");
  CHORUS_CHECK(save_every >= 0, "save-every: must be >= 0, got %lld", ll(save_every));
  CHORUS_CHECK(keep_last >= 0, "keep-last: must be >= 0, got %d", keep_last);
  CHORUS_CHECK(stop_at >= 0, "stop-at: must be >= 0, got %lld", ll(stop_at));
  CHORUS_CHECK(max_skipped_in_a_row >= 1, "max-skipped-steps: must be >= 1, got %d", max_skipped_in_a_row);
  CHORUS_CHECK(max_bad_steps >= 0, "max-bad-steps: must be >= 0 (0 = stop at the first bad step), got %d",
               max_bad_steps);
  CHORUS_CHECK(bad_grad_norm >= 0 && std::isfinite(bad_grad_norm),
               "bad-grad-norm: must be a finite number >= 0 (0 = only non-finite norms are bad), got %g",
               bad_grad_norm);
  CHORUS_CHECK(zero_stage == 0 || zero_stage == 1, "zero: must be 0 or 1, got %d", zero_stage);
  CHORUS_CHECK(muon.lr >= 0 && std::isfinite(muon.lr), "muon-lr: must be a finite number >= 0, got %g", muon.lr);
  CHORUS_CHECK(muon.momentum >= 0 && muon.momentum < 1, "muon-momentum: must be in [0, 1), got %g", muon.momentum);
  CHORUS_CHECK(optimizer != optim::OptimizerKind::muon || lr > 0,
               "lr: must be > 0 with --optimizer muon (Muon's rate follows lr's schedule as muon-lr * lr(step) / lr)");
  CHORUS_CHECK(bucket_mb > 0, "bucket-mb: must be > 0, got %g", bucket_mb);
  CHORUS_CHECK(watchdog_timeout_s == 0 || watchdog_timeout_s >= 1,
               "watchdog-timeout: must be 0 (off) or at least 1 second, got %g", watchdog_timeout_s);
  loss_scaler.validate();
  lr_schedule().validate();
}

int TrainOptions::accum_at(int64_t step) const {
  if (batch_warmup <= 0 || step >= batch_warmup) return grad_accum;
  const int64_t n = (static_cast<int64_t>(grad_accum) * (step + 1) + batch_warmup - 1) / batch_warmup;
  return static_cast<int>(std::clamp<int64_t>(n, 1, grad_accum));
}

uint64_t TrainOptions::micro_batches_before(int64_t step) const {
  const int64_t ramp = std::min(step, batch_warmup);
  uint64_t n = 0;
  for (int64_t s = 0; s < ramp; ++s) n += static_cast<uint64_t>(accum_at(s));
  return n + static_cast<uint64_t>(step - ramp) * static_cast<uint64_t>(grad_accum);
}

int64_t TrainOptions::step_after_micro_batches(uint64_t micro_batches) const {
  uint64_t done = 0;
  int64_t s = 0;
  for (; s < batch_warmup; ++s) {
    const uint64_t next = done + static_cast<uint64_t>(accum_at(s));
    if (next > micro_batches) return s;
    done = next;
  }
  return s + static_cast<int64_t>((micro_batches - done) / static_cast<uint64_t>(grad_accum));
}

nlohmann::json TrainOptions::to_json() const {
  const auto f = json_float;  // 0.9, not 0.8999999761581421
  const auto& ls = loss_scaler;
  nlohmann::json j = {
      {"grad_accum", grad_accum}, {"batch_warmup", batch_warmup}, {"steps", steps}, {"seed", seed}, {"lr", f(lr)}, {"min_lr", f(min_lr)},
      {"schedule", optim::schedule_name(schedule)}, {"decay_frac", decay_frac},
      {"warmup", warmup}, {"grad_clip", f(grad_clip)}, {"weight_decay", f(adamw.weight_decay)},
      {"beta1", f(adamw.beta1)}, {"beta2", f(adamw.beta2)}, {"eps", f(adamw.eps)},
      {"optimizer", optim::optimizer_name(optimizer)},
      {"precision", precision_name(precision)}, {"loss_scaling", ls.enabled},
      {"loss_scaler", {{"init_scale", ls.init_scale}, {"growth", ls.growth}, {"growth_interval", ls.growth_interval},
                       {"backoff", ls.backoff}, {"min_scale", ls.min_scale}, {"max_scale", ls.max_scale}}},
      {"max_skipped_steps", max_skipped_in_a_row}, {"max_bad_steps", max_bad_steps},
       {"bad_grad_norm", bad_grad_norm}, {"watchdog_timeout_s", watchdog_timeout_s},
      {"grad_reduce_dtype", grad_reduce_dtype == dist::DType::bf16 ? "bf16" : "fp32"}, {"zero", zero_stage},
      {"bucket_mb", bucket_mb}, {"eval_every", eval_every}, {"log_every", log_every}, {"quiet", quiet},
      {"peak_gflops", peak_gflops}, {"max_memory_gib", max_memory_gib}, {"rank_stats_every", rank_stats_every},
      {"run_dir", fs::absolute(run_dir).string()},
      {"checkpoint", {{"save_dir", fs::absolute(save_dir.empty() ? run_dir : save_dir).string()},
                      {"save_every", save_every}, {"keep_last", keep_last}, {"resume", resume},
                      {"stop_at", stop_at}, {"handle_signals", handle_signals}}},
      {"system", {{"threads", omp_get_max_threads()}, {"gemm", backend::cpu::gemm_describe()}}}};
  if (optimizer == optim::OptimizerKind::muon)
    j["muon"] = {{"lr", f(muon.lr)}, {"momentum", f(muon.momentum)}, {"nesterov", muon.nesterov},
                 {"ns_steps", muon.ns_steps}};
  if (step_delay_ms > 0) j["fault_injection"]["step_delay_ms"] = step_delay_ms;
  if (fail_rank >= 0) j["fault_injection"]["fail_at"] = strfmt("%d:%lld", fail_rank, static_cast<long long>(fail_step));
  for (const auto& [name, f] : {std::pair{"inject_inf", &inject_inf_grad}, std::pair{"inject_nan_loss", &inject_nan_loss}})
    if (f->rank >= 0)
      j["fault_injection"][name] = strfmt("%d:%lld:%lld", f->rank, static_cast<long long>(f->step),
                                          static_cast<long long>(f->count));
  return j;
}

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// SIGTERM / SIGUSR1 only set a flag; the loop agrees on it over all ranks at
// the end of every step, checkpoints and stops (DESIGN.md "Signals").
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

class StopSignals {
 public:
  explicit StopSignals(bool enable) : enabled_(enable) {
    if (!enabled_) return;
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGUSR1, &sa, &old_usr1_);
  }
  ~StopSignals() {
    if (!enabled_) return;
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGUSR1, &old_usr1_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal any rank received (0: none). Collective over `world`.
  int agreed(dist::Communicator& world) const {
    if (!enabled_) return 0;
    return static_cast<int>(world.all_reduce_scalar(static_cast<double>(g_stop_signal), dist::ReduceOp::max));
  }

 private:
  bool enabled_;
  struct sigaction old_term_ {}, old_usr1_ {};
};

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}

// Keeps the rows of metrics.jsonl up to `step` (a resumed run rewrites what
// came after its checkpoint).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a torn last line of a killed run
    }
  }
  in.close();
  write_file_atomic(path, kept);
}

// Warns (rank 0) about shared settings that differ from the checkpoint's:
// allowed, but then the run does not continue exactly as one uninterrupted
// run would.
void warn_differences(const checkpoint::Manifest& m, const checkpoint::Manifest& now, const TrainOptions& o) {
  auto warn = [](const char* what, const std::string& ckpt, const std::string& cur) {
    log_warn("resume: %s was %s in the checkpoint and is %s now: the run continues, but not exactly as one "
             "uninterrupted run would",
             what, ckpt.c_str(), cur.c_str());
  };
  auto num = [](double v) { return strfmt("%g", v); };
  if (m.schedule.total_steps != o.steps) warn("steps", num(m.schedule.total_steps), num(o.steps));
  if (m.schedule.max_lr != o.lr) warn("lr", num(m.schedule.max_lr), num(o.lr));
  if (m.schedule.min_lr != o.min_lr) warn("min-lr", num(m.schedule.min_lr), num(o.min_lr));
  if (m.schedule.warmup != o.warmup) warn("warmup", num(m.schedule.warmup), num(o.warmup));
  if (m.schedule.kind != optim::schedule_name(o.schedule)) warn("schedule", m.schedule.kind, optim::schedule_name(o.schedule));
  if (o.schedule == optim::ScheduleKind::wsd && m.schedule.decay_frac != o.decay_frac)
    warn("decay-frac", num(m.schedule.decay_frac), num(o.decay_frac));
  if (m.sampler.seed != o.seed) warn("seed (data order)", num(m.sampler.seed), num(o.seed));
  if (m.sampler.seq_len != now.sampler.seq_len) warn("seq-len", num(m.sampler.seq_len), num(now.sampler.seq_len));
  if (m.sampler.samples_per_step != now.sampler.samples_per_step)
    warn("the global batch (samples per step)", num(m.sampler.samples_per_step),
         num(now.sampler.samples_per_step));
  if (m.optimizer.beta1 != o.adamw.beta1 || m.optimizer.beta2 != o.adamw.beta2 || m.optimizer.eps != o.adamw.eps ||
      m.optimizer.weight_decay != o.adamw.weight_decay)
    warn("AdamW (beta1, beta2, eps, weight-decay)",
         strfmt("(%g, %g, %g, %g)", m.optimizer.beta1, m.optimizer.beta2, m.optimizer.eps, m.optimizer.weight_decay),
         strfmt("(%g, %g, %g, %g)", o.adamw.beta1, o.adamw.beta2, o.adamw.eps, o.adamw.weight_decay));
  if (m.optimizer.grad_clip != o.grad_clip) warn("grad-clip", num(m.optimizer.grad_clip), num(o.grad_clip));
  if (o.optimizer == optim::OptimizerKind::muon &&
      (m.optimizer.muon_lr != o.muon.lr || m.optimizer.muon_momentum != o.muon.momentum ||
       m.optimizer.muon_nesterov != o.muon.nesterov))
    warn("Muon (muon-lr, muon-momentum, nesterov)",
         strfmt("(%g, %g, %d)", m.optimizer.muon_lr, m.optimizer.muon_momentum, m.optimizer.muon_nesterov ? 1 : 0),
         strfmt("(%g, %g, %d)", o.muon.lr, o.muon.momentum, o.muon.nesterov ? 1 : 0));
}

// Why a step is bad (the divergence guard), in rising order of severity.
enum class BadStep { none = 0, norm_above_bound, nonfinite_norm, nonfinite_loss };

const char* bad_step_reason(BadStep b) {
  switch (b) {
    case BadStep::norm_above_bound: return "gradient norm above --bad-grad-norm";
    case BadStep::nonfinite_norm: return "non-finite gradient norm";
    case BadStep::nonfinite_loss: return "non-finite loss";
    default: return "good";
  }
}

// Judges a step before its update from the DP-averaged loss and the global
// gradient norm (reduced over DP and TP); a loss-scaling overflow (st.skipped)
// is the scaler's to handle, not a bad step. Ranks see the same values, but a
// rank's own fault (a NaN loss on one TP rank) must stop every rank's update:
// the worst reason over the world is the verdict of all.
BadStep judge_step(float loss, const optim::StepStats& st, double bound, dist::Communicator& world) {
  BadStep b = BadStep::none;
  if (!std::isfinite(loss))
    b = BadStep::nonfinite_loss;
  else if (!st.skipped && !std::isfinite(st.grad_norm))
    b = BadStep::nonfinite_norm;
  else if (!st.skipped && bound > 0 && st.grad_norm > bound)
    b = BadStep::norm_above_bound;
  return static_cast<BadStep>(
      static_cast<int>(world.all_reduce_scalar(static_cast<double>(b), dist::ReduceOp::max)));
}

std::vector<checkpoint::TensorInfo> tensor_infos(const std::vector<models::ParamSpec>& table) {
  std::vector<checkpoint::TensorInfo> out;
  for (const auto& p : table) out.push_back({p.name, p.global_shape, p.tp_axis, p.tp_parts});
  return out;
}

}  // namespace

std::vector<optim::MuonMatrix> muon_matrices(const std::vector<models::ParamSpec>& table) {
  std::vector<optim::MuonMatrix> out;
  for (const auto& p : table) {
    if (!p.hidden_matrix) continue;
    CHORUS_CHECK(p.global_shape.size() == 2, "Muon: tensor '%s' is marked a hidden matrix but has %zu dimensions",
                 p.name.c_str(), p.global_shape.size());
    out.push_back({p.name, p.offset, p.numel, p.global_shape[0], p.global_shape[1], p.tp_axis, p.tp_parts});
  }
  return out;
}

TrainResult run_training(TrainTask& task, const TrainOptions& opt) {
  opt.validate();
  const optim::LrSchedule schedule = opt.lr_schedule();

  // Installed first: a pre-emption warning during start-up (loading a large
  // checkpoint) must not kill the process; it is acted on after the first step.
  StopSignals signals(opt.handle_signals);

  dist::ParallelGrid single = dist::ParallelGrid::single();
  dist::ParallelGrid& grid = opt.grid ? *opt.grid : single;
  const bool writer = grid.world_rank() == 0;
  dist::Watchdog watchdog(grid, opt.watchdog_timeout_s, opt.run_dir);  // a hung collective ends the job

  std::vector<optim::Range> decay, replicated;
  for (const auto& p : task.param_table()) {
    if (p.decay) decay.push_back({p.offset, p.offset + p.numel});
    if (p.tp_axis < 0) replicated.push_back({p.offset, p.offset + p.numel});
  }
  optim::DistributedOptimizerConfig ocfg;
  ocfg.adamw = opt.adamw;
  ocfg.zero_stage = opt.zero_stage;
  ocfg.bucket_floats = std::max<size_t>(1, static_cast<size_t>(opt.bucket_mb * (1 << 20) / sizeof(float)));
  ocfg.grad_clip = opt.grad_clip;
  ocfg.grad_reduce_dtype = opt.grad_reduce_dtype;
  ocfg.kind = opt.optimizer;
  ocfg.muon = opt.muon;
  if (opt.optimizer == optim::OptimizerKind::muon) ocfg.muon_matrices = muon_matrices(task.param_table());
  optim::DistributedOptimizer optimizer(task.params().size(), decay, replicated, ocfg, grid.dp(), grid.tp());
  size_t muon_floats = 0;  // the Muon matrices' global sizes (the same for any layout)
  for (const auto& mm : optimizer.muon_matrices()) muon_floats += static_cast<size_t>(mm.rows) * mm.cols;

  const double peak_gflops = opt.peak_gflops > 0 ? opt.peak_gflops : backend::cpu::measure_sgemm_gflops();
  task.log_setup();
  if (opt.optimizer == optim::OptimizerKind::muon) {
    size_t n_muon = 0;
    for (const auto& mm : optimizer.muon_matrices()) n_muon += mm.numel;
    log_info("optimizer: Muon (lr %g, momentum %g%s, %d Newton-Schulz steps) on %zu hidden matrices (%.1f%% of "
             "this rank's parameters), AdamW (lr %g) on the rest",
             opt.muon.lr, opt.muon.momentum, opt.muon.nesterov ? " Nesterov" : "", opt.muon.ns_steps,
             optimizer.muon_matrices().size(), 100.0 * n_muon / std::max<size_t>(1, task.params().size()), opt.lr);
  }
  log_info("layout: %s, zero %d; %.0f tokens per step", grid.describe().c_str(), opt.zero_stage,
           task.tokens_per_step());
  const models::GptMemory mem0 = task.memory();
  log_info("compute: precision %s%s, DP gradient reduction in %s; %s; subnormals %s", precision_name(opt.precision),
           opt.loss_scaler.enabled ? strfmt(" with dynamic loss scaling (init %g)", opt.loss_scaler.init_scale).c_str()
                                   : "",
           opt.grad_reduce_dtype == dist::DType::bf16 ? "bf16" : "fp32", backend::cpu::gemm_describe().c_str(),
           backend::cpu::denormals_flushed() ? "flushed to zero" : "kept");
  log_info("memory per rank: fp32 master weights %.1f MiB, %s compute copy %.1f MiB, fp32 grads %.1f MiB, Adam "
           "state %.1f MiB%s, activations (%s) %.1f MiB; %d threads; MFU against %.1f GFLOP/s per rank (%s)",
           mem0.master_bytes / double(1 << 20), precision_name(opt.precision),
           mem0.compute_weight_bytes / double(1 << 20), mem0.grad_bytes / double(1 << 20),
           optimizer.state_bytes() / double(1 << 20), opt.zero_stage ? " (ZeRO-1 slice)" : "",
           precision_name(opt.precision), mem0.activation_bytes / double(1 << 20), omp_get_max_threads(),
           peak_gflops, opt.peak_gflops > 0 ? "from config" : "measured sgemm");

  // Checkpoint state: views of the model and optimizer, plus this rank's RNG
  // (stream 1000 + world rank) that stochastic layers draw from.
  Rng rng(opt.seed, 1000 + static_cast<uint64_t>(grid.world_rank()));
  optim::LossScaler scaler(opt.loss_scaler);
  checkpoint::Manifest identity;  // what the task says about itself
  task.describe(identity);
  checkpoint::RankState ck;
  ck.tensors = tensor_infos(task.param_table());
  for (const auto& p : task.param_table()) ck.offsets.push_back(p.offset);
  ck.params = task.params();
  ck.opt_range = {optimizer.owned().begin, optimizer.owned().end};
  ck.exp_avg = optimizer.adamw().m();
  ck.exp_avg_sq = optimizer.adamw().v();
  ck.model_type = identity.model_type;
  ck.model_extra = identity.model_extra;
  const std::string save_dir = opt.save_dir.empty() ? opt.run_dir : opt.save_dir;
  int64_t start_step = 0;
  uint64_t tokens_seen = 0;
  std::string resumed_from;
  if (!opt.resume.empty()) {
    ck.rng = rng.state();
    auto loaded = checkpoint::resume_checkpoint(grid, opt.resume, save_dir, opt.zero_stage, identity.model,
                                                identity.tokenizer_hash, ck);
    if (loaded) {
      const checkpoint::Manifest& m = loaded->manifest;
      // Muon's momentum and AdamW's moments share the exp_avg slots: the
      // state of one optimizer is not the other's, so the switch is refused.
      // Every rank read the same manifest: one report, no abort.
      if (m.optimizer.type != optim::optimizer_name(opt.optimizer))
        throw AgreedError(strfmt("resume: checkpoint %s was trained with --optimizer %s and this run has --optimizer "
                                 "%s; its optimizer state cannot continue under another optimizer (resume with "
                                 "--optimizer %s, or start a new run)",
                                 loaded->path.c_str(), m.optimizer.type.c_str(), optim::optimizer_name(opt.optimizer),
                                 m.optimizer.type.c_str()));
      if (m.optimizer.type == "muon" && m.optimizer.muon_tensors >= 0 &&
          (m.optimizer.muon_tensors != static_cast<int64_t>(optimizer.muon_matrices().size()) ||
           m.optimizer.muon_floats != static_cast<int64_t>(muon_floats)))
        throw AgreedError(strfmt("resume: checkpoint %s updated %lld tensors (%lld floats) with Muon and this run "
                                 "would update %zu (%zu floats): its momentum slots are another optimizer's state "
                                 "(resume with the same --muon-scope, or start a new run)",
                                 loaded->path.c_str(), static_cast<long long>(m.optimizer.muon_tensors),
                                 static_cast<long long>(m.optimizer.muon_floats), optimizer.muon_matrices().size(),
                                 muon_floats));
      start_step = m.step;
      tokens_seen = m.tokens_seen;
      resumed_from = loaded->path;
      task.set_consumed(m.sampler.consumed);
      scaler.restore({m.loss_scaler.enabled, m.loss_scaler.scale, m.loss_scaler.good_steps,
                      m.loss_scaler.skipped_steps});
      if (writer && m.precision != precision_name(opt.precision))
        log_warn("resume: the checkpoint was trained in %s and this run computes in %s (the fp32 master weights "
                 "and Adam state carry over exactly; the loss curve will not continue bit-for-bit)%s",
                 m.precision.c_str(), precision_name(opt.precision),
                 opt.loss_scaler.enabled && !m.loss_scaler.enabled ? "; loss scaling starts at its initial scale"
                                                                    : "");
      if (loaded->rng_restored) {
        rng.set_state(ck.rng);
      } else if (writer) {
        log_warn("resume: RNG states not restored (%s); each rank starts its stream (seed, 1000 + rank) afresh",
                 m.rng.empty() ? "the checkpoint holds none: it was resharded offline to another world size"
                               : strfmt("saved by %d ranks, this run has %d", m.layout.world(), grid.world_size())
                                     .c_str());
      }
      if (writer) {
        warn_differences(m, identity, opt);
        task.warn_differences(m);
      }
      log_info("resumed from %s: step %lld, %llu tokens seen%s; read %.1f MB in %.2f s (%.0f MB/s read)",
               loaded->path.c_str(), static_cast<long long>(start_step), static_cast<unsigned long long>(tokens_seen),
               loaded->resharded ? strfmt(" (resharded from %s)", m.layout.describe().c_str()).c_str() : "",
               loaded->bytes / 1e6, loaded->seconds, loaded->bytes / 1e6 / std::max(loaded->seconds, 1e-9));
    } else {
      log_info("resume auto: no checkpoint in %s; starting from step 0", save_dir.c_str());
    }
  } else if (writer && fs::exists(fs::path(save_dir) / "latest")) {
    log_warn("%s already holds checkpoints ('latest' exists); this run starts from step 0 and replaces them as it "
             "saves (use --resume auto to continue instead)",
             save_dir.c_str());
  }
  auto save = [&](int64_t steps_done) {
    checkpoint::Manifest meta;
    task.describe(meta);
    meta.step = steps_done;
    meta.tokens_seen = tokens_seen;
    meta.sampler.consumed = task.consumed();
    meta.sampler.seed = opt.seed;
    meta.schedule = {steps_done, opt.lr, opt.min_lr, opt.warmup, opt.steps, optim::schedule_name(opt.schedule),
                     opt.decay_frac};
    meta.optimizer.t = steps_done;  // AdamW's t for step s is s + 1
    meta.optimizer.beta1 = opt.adamw.beta1;
    meta.optimizer.beta2 = opt.adamw.beta2;
    meta.optimizer.eps = opt.adamw.eps;
    meta.optimizer.weight_decay = opt.adamw.weight_decay;
    meta.optimizer.grad_clip = opt.grad_clip;
    meta.optimizer.type = optim::optimizer_name(opt.optimizer);
    meta.optimizer.muon_lr = opt.muon.lr;
    meta.optimizer.muon_momentum = opt.muon.momentum;
    meta.optimizer.muon_nesterov = opt.muon.nesterov;
    meta.optimizer.muon_tensors = static_cast<int64_t>(optimizer.muon_matrices().size());
    meta.optimizer.muon_floats = static_cast<int64_t>(muon_floats);
    const optim::LossScalerSnapshot ls = scaler.snapshot();
    meta.loss_scaler = {ls.enabled, ls.scale, ls.good_steps, ls.skipped_steps};
    meta.precision = precision_name(opt.precision);
    meta.layout.zero = opt.zero_stage;
    meta.run["grad_accum"] = opt.grad_accum;
    meta.run["batch_warmup"] = opt.batch_warmup;
    meta.run["seed"] = opt.seed;
    meta.run["steps"] = opt.steps;
    meta.run["run_dir"] = fs::absolute(opt.run_dir).string();
    ck.rng = rng.state();
    const auto r = checkpoint::save_checkpoint(grid, save_dir, meta, ck, opt.keep_last);
    log_info("checkpoint: saved %s (%d files, %.1f MB in %.2f s, %.0f MB/s write)", r.path.c_str(), r.n_files,
             r.bytes / 1e6, r.seconds, r.bytes / 1e6 / std::max(r.seconds, 1e-9));
    return r.path;
  };

  // Everything the run needs is checked (flags, tokenizer, shards, the resume
  // target, room for a checkpoint): only now is the run directory written.
  check_save_room(opt, save_dir, task.param_table(), start_step, grid.world());
  if (writer) write_run_config(opt.run_dir, run_config(task, opt, grid, resumed_from, start_step));
  if (writer && start_step > 0) truncate_metrics((fs::path(opt.run_dir) / "metrics.jsonl").string(), start_step);
  MetricsWriter metrics((fs::path(opt.run_dir) / "metrics.jsonl").string(), writer, /*truncate=*/start_step == 0);
  TrainResult result;
  result.start_step = start_step;
  result.steps_done = start_step;
  std::vector<double> tok_rates, mfus;
  RunClock clock;  // elapsed since the first step of this invocation, ETA to its end_step
  const int64_t end_step = opt.stop_at > 0 ? std::min(opt.stop_at, opt.steps) : opt.steps;
  if (start_step >= end_step)
    log_info("nothing to train: the checkpoint is at step %lld and the run ends at step %lld",
             static_cast<long long>(start_step), static_cast<long long>(end_step));
  const double tokens_per_step = task.tokens_per_step();
  int bad_in_a_row = 0;  // consecutive bad steps (divergence guard)

  for (int64_t step = start_step; step < end_step; ++step) {
    watchdog.set_step(step + 1);
    Timer timer;
    task.zero_grad();
    double loss_sum = 0.0;
    const double loss_scale = scaler.scale();  // 1 unless fp16 loss scaling
    const int accum = opt.accum_at(step);  // opt.grad_accum after the batch warmup
    for (int micro = 0; micro < accum; ++micro)
      loss_sum += task.train_micro_batch(static_cast<float>(loss_scale / accum));
    if (opt.step_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt.step_delay_ms));
    const double compute_secs = timer.seconds();  // this rank's own work, before it waits for the others
    CHORUS_CHECK(!(grid.world_rank() == opt.fail_rank && step == opt.fail_step),
                 "injected failure at step %lld (CHORUS_FAIL_AT)", static_cast<long long>(step));
    if (opt.inject_inf_grad.at(grid.world_rank(), step)) task.grads()[0] = std::numeric_limits<float>::infinity();
    if (opt.inject_nan_loss.at(grid.world_rank(), step)) loss_sum = std::numeric_limits<double>::quiet_NaN();
    // Gradients are synchronised once per optimizer step, after the last micro-batch.
    const float loss =
        static_cast<float>(grid.dp().all_reduce_scalar(loss_sum / accum, dist::ReduceOp::avg));
    const float lr = schedule.lr_at(step);
    optim::StepOptions so{loss_scale, scaler.enabled(), {}};
    for (const LrGroup& g : task.lr_groups(step)) so.lr_scales.push_back({g.range, g.lr_scale});
    so.muon_lr = opt.muon.lr * (opt.lr > 0 ? lr / opt.lr : 0.0f);  // Muon's peak, on the same schedule
    const optim::StepStats st = optimizer.reduce(task.grads(), so);
    // The divergence guard: a bad step changes no parameter or moment on any
    // rank; its data stays consumed (a retry would diverge the same way) and
    // the step counts, as a loss-scaling overflow does, so resume stays exact.
    const BadStep bad = judge_step(loss, st, opt.bad_grad_norm, grid.world());
    if (bad == BadStep::none && !st.skipped) optimizer.apply(task.params(), task.grads(), lr, step + 1, st, so);
    bad_in_a_row = bad == BadStep::none ? 0 : bad_in_a_row + 1;
    if (bad != BadStep::none) {
      ++result.bad_steps;
      if (writer)
        log_warn("step %lld: bad step (%s): loss %g, grad-norm %g; update skipped on every rank (%d in a row, "
                 "--max-bad-steps %d)",
                 static_cast<long long>(step + 1), bad_step_reason(bad), static_cast<double>(loss), st.grad_norm,
                 bad_in_a_row, opt.max_bad_steps);
    } else if (scaler.enabled()) {
      scaler.update(st.skipped);
      if (st.skipped && writer)
        log_warn("step %lld: non-finite gradients with loss scale %g; step skipped on every rank, scale now %g",
                 static_cast<long long>(step + 1), loss_scale, scaler.scale());
      if (scaler.consecutive_skips() >= opt.max_skipped_in_a_row)
        throw TrainingDiverged(strfmt(
            "training diverged: %lld steps in a row had non-finite gradients (loss scale now %g) at step %lld, "
            "--max-skipped-steps %d (lower lr, check data)",
            static_cast<long long>(scaler.consecutive_skips()), scaler.scale(), static_cast<long long>(step + 1),
            opt.max_skipped_in_a_row));
    }
    const double norm = st.grad_norm;
    const double secs = timer.seconds();
    clock.add_step(secs);
    // The task reports a full step (opt.grad_accum micro-batches); a batch-warmup step does accum of them.
    const double step_share = static_cast<double>(accum) / opt.grad_accum;
    const double step_tokens = tokens_per_step * step_share;
    const double tok_s = step_tokens / secs;
    const double mfu = task.flops_per_step(step) * step_share / secs / (peak_gflops * 1e9 * grid.world_size());
    if (step > start_step || end_step - start_step == 1) {
      tok_rates.push_back(tok_s);
      mfus.push_back(mfu);
    }
    tokens_seen += static_cast<uint64_t>(step_tokens);
    if (step == start_step) result.first_loss = loss;
    result.last_loss = loss;
    result.steps_done = step + 1;

    const uint64_t peak_mem = peak_rss_bytes();
    // Memory by kind, as held now: parameters (fp32 masters + compute copy),
    // gradients, optimizer state, activations (the table + the fp32 scratch of
    // the mixed-precision layers).
    const models::GptMemory mem = task.memory();
    const double mib = 1.0 / (1 << 20);
    const double mem_params = (mem.master_bytes + mem.compute_weight_bytes) * mib;
    const double mem_grads = mem.grad_bytes * mib;
    const double mem_optim = optimizer.state_bytes() * mib;
    const double mem_acts = (mem.activation_bytes + backend::cpu::scratch_bytes()) * mib;
    // ETA to end_step: the steps left, this step's evaluation and those after
    // it (and the final one), the periodic checkpoints and the one at the end.
    const int64_t evals_left = events_left(opt.eval_every, step + 1, end_step, end_step == opt.steps);
    const int64_t saves_left = events_left(opt.save_every, step + 1, end_step, true);
    const double elapsed = clock.elapsed();
    const double eta = clock.eta(end_step - step - 1, evals_left, saves_left);
    // The straggler check: one all_gather of each rank's compute time, on every rank at the same steps.
    std::optional<RankTimes> rank_times;
    if (opt.rank_stats_every > 0 && (step + 1) % opt.rank_stats_every == 0)
      rank_times = gather_rank_times(grid.world(), compute_secs);
    if (!opt.quiet && (step % opt.log_every == 0 || step + 1 == opt.steps)) {
      const std::string scale_part =
          scaler.enabled() ? strfmt(" | scale %g (%lld skipped)", loss_scale, static_cast<long long>(scaler.skipped_steps()))
                           : std::string();
      const std::string ranks_part =
          rank_times ? strfmt(" | fwd+bwd %.0f/%.0f/%.0f ms (min/med/max of ranks), slowest rank %d",
                              rank_times->min * 1e3, rank_times->median * 1e3, rank_times->max * 1e3,
                              rank_times->slowest)
                     : std::string();
      log_info("step %6lld/%lld | loss %.4f | lr %.2e | grad-norm %.3f | %8.0f %s | MFU %5.1f%%%s | mem MiB "
               "params %.0f grads %.0f optim %.0f acts %.0f peak %.0f | %.0f ms | %s elapsed, ETA %s%s",
               static_cast<long long>(step + 1), static_cast<long long>(opt.steps), loss, lr, norm, tok_s,
               task.throughput_unit(),
               100.0 * mfu, scale_part.c_str(), mem_params, mem_grads, mem_optim, mem_acts,
               peak_mem / double(1 << 20), secs * 1e3, format_duration(elapsed).c_str(),
               format_duration(eta).c_str(), ranks_part.c_str());
    }
    nlohmann::json row = {{"step", step + 1}, {"loss", loss}, {"lr", lr},
                          {"grad_norm", std::isfinite(norm) ? nlohmann::json(norm) : nlohmann::json(nullptr)},
                          {"tokens_per_s", tok_s}, {"mfu", mfu}, {"peak_mem_mib", peak_mem / double(1 << 20)},
                          {"mem_params_mib", mem_params}, {"mem_grads_mib", mem_grads},
                          {"mem_optimizer_mib", mem_optim}, {"mem_activations_mib", mem_acts},
                          {"loss_scale", loss_scale}, {"skipped_steps", scaler.skipped_steps()},
                          {"step_skipped", st.skipped || bad != BadStep::none},
                          {"bad_step", bad != BadStep::none}, {"bad_steps", result.bad_steps},
                          {"tokens", tokens_seen}, {"elapsed_s", elapsed},
                          {"train_s", clock.train_seconds()}, {"eta_s", eta}};
    if (rank_times)
      row.update({{"rank_step_ms_min", rank_times->min * 1e3}, {"rank_step_ms_median", rank_times->median * 1e3},
                  {"rank_step_ms_max", rank_times->max * 1e3}, {"slowest_rank", rank_times->slowest}});
    if (!std::isfinite(loss)) row["loss"] = nullptr;
    row.update(task.step_metrics());
    const bool last = step + 1 == opt.steps;
    if (last || (opt.eval_every > 0 && (step + 1) % opt.eval_every == 0)) {
      watchdog.set_phase("evaluation");
      Timer eval_timer;
      const nlohmann::json ev = task.evaluate();
      clock.add_eval(eval_timer.seconds());
      row.update(ev);
      result.last_eval = ev;
      if (!opt.quiet)
        log_info("step %6lld/%lld | val %s", static_cast<long long>(step + 1), static_cast<long long>(opt.steps),
                 task.describe_eval(ev).c_str());
    }
    metrics.write(row);
    if (bad_in_a_row > opt.max_bad_steps)
      throw TrainingDiverged(strfmt(
          "training diverged: %d bad steps in a row, more than --max-bad-steps %d (the last, step %lld: %s, loss "
          "%g, grad-norm %g); no bad update was applied or saved: resume from the newest checkpoint in '%s' with "
          "a lower --lr, or check the data of these steps",
          bad_in_a_row, opt.max_bad_steps, static_cast<long long>(step + 1), bad_step_reason(bad),
          static_cast<double>(loss), st.grad_norm, save_dir.c_str()));

    // Every rank stops after the same step: a signal on any rank is agreed on here.
    const int64_t done = step + 1;
    int sig = signals.agreed(grid.world());
    const bool end = sig != 0 || done == end_step;
    if (end || (opt.save_every > 0 && done % opt.save_every == 0)) {
      watchdog.set_phase("checkpoint");
      Timer save_timer;
      result.checkpoint = save(done);
      clock.add_save(save_timer.seconds());
      if (!end) sig = signals.agreed(grid.world());  // a signal during the save: stop now, it is saved
    }
    if (sig != 0) {
      result.stop_signal = sig;
      break;
    }
  }
  result.stopped = result.steps_done < opt.steps;
  result.skipped_steps = scaler.skipped_steps();
  result.loss_scale = scaler.scale();
  result.tokens_per_s = median(tok_rates);
  result.mfu = median(mfus);
  if (result.stopped) {
    const std::string saved = result.checkpoint.empty() ? std::string("no new checkpoint") : result.checkpoint;
    if (result.stop_signal != 0)
      log_info("stopped by %s after step %lld of %lld (%s); continue with --resume auto (exit code %d)",
               signal_name(result.stop_signal), static_cast<long long>(result.steps_done),
               static_cast<long long>(opt.steps), saved.c_str(), kExitPreempted);
    else
      log_info("stopped at step %lld of %lld (--stop-at; %s); continue with --resume auto",
               static_cast<long long>(result.steps_done), static_cast<long long>(opt.steps), saved.c_str());
  }
  return result;
}

}  // namespace chorus::train
