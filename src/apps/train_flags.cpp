#include "apps/train_flags.h"

#include <omp.h>

#include <cstdio>
#include <cstdlib>

#include "backend/cpu/gemm.h"
#include "core/error.h"
#include "core/log.h"

namespace chorus::apps {

namespace {

// A test's fault injection from environment variable `name`: "RANK:STEP" or
// "RANK:STEP:COUNT" (docs/RELIABILITY.md); unset: none.
train::InjectedFault injected_fault(const char* name) {
  train::InjectedFault f;
  const char* v = std::getenv(name);
  if (v == nullptr) return f;
  long long step = -1, count = 1;
  char end = 0;
  const int n = std::sscanf(v, "%d:%lld:%lld%c", &f.rank, &step, &count, &end);
  CHORUS_CHECK((n == 2 || n == 3) && f.rank >= 0 && step >= 0 && count >= 1,
               "%s: expected RANK:STEP or RANK:STEP:COUNT (RANK, STEP >= 0, COUNT >= 1), got '%s'", name, v);
  f.step = step;
  f.count = count;
  return f;
}

}  // namespace

void add_train_flags(OptionSet& o, const TrainFlagDefaults& d) {
  o.add<int64_t>("train", "steps", d.steps, "optimizer steps; the LR schedule is built for this many");
  o.add<int>("train", "grad-accum", 1, "micro-batches accumulated per optimizer step");
  o.add<int64_t>("train", "batch-warmup", 0,
                 "batch-size warmup: over the first N steps the micro-batches per step ramp linearly from 1 to "
                 "--grad-accum (so the global batch from batch x dp to batch x grad-accum x dp); 0 = off");
  o.add<uint64_t>("train", "seed", 1337, "seed for initialisation, data order and sampling");
  o.add<std::string>("train", "run-dir", d.run_dir, "output directory of this run");
  o.add<int64_t>("train", "stop-at", 0,
                 "end after step K with a checkpoint, as a pre-emption would (0 = run to --steps); exit code 0");
  o.add<int64_t>("train", "eval-every", d.eval_every, "validate every N steps (and always after the last; 0 = only then)");
  o.add<int>("train", "log-every", 1, "print a step line every N steps (metrics.jsonl gets every step)");
  o.add<int64_t>("train", "rank-stats-every", 50,
                 "every N steps gather each rank's step time (its forward + backward before the gradient sync) "
                 "over all ranks: min/median/max and the slowest rank go on the step line and into "
                 "metrics.jsonl (one small collective; 0 = off, >= 0)");
  o.add<std::string>("train", "precision", "fp32",
                     "compute dtype of activations and of the weights' compute copy: fp32 | bf16 | fp16. Master "
                     "weights, gradients and Adam state stay fp32 in every precision, and checkpoints hold the fp32 "
                     "masters, so a run may resume in another precision. bf16 is recommended where the CPU has bf16 "
                     "matrix units (AMX-BF16, AVX512-BF16: oneDNN runs its GEMMs several times faster than fp32) "
                     "and halves activation memory everywhere; on CPUs without them its GEMMs run through fp32 "
                     "SGEMM and it is about as fast as fp32. fp16 needs loss scaling (on by default with it)");
  o.add<std::string>("train", "loss-scaling", "auto",
                     "auto = dynamic loss scaling for fp16, off otherwise | dynamic | off");
  o.add<double>("train", "loss-scale-init", 65536.0, "65536", "initial loss scale (dynamic loss scaling)");
  o.add<double>("train", "loss-scale-growth", 2.0, "2", "multiply the scale by this after loss-scale-interval "
                "finite steps in a row (> 1)");
  o.add<int64_t>("train", "loss-scale-interval", 2000, "finite steps in a row before the scale grows");
  o.add<double>("train", "loss-scale-backoff", 0.5, "0.5", "multiply the scale by this when a step had Inf/NaN "
                "gradients on any rank (that step is skipped on every rank); in (0, 1)");
  o.add<int>("train", "max-skipped-steps", 20,
             "stop with an error after this many loss-scaling overflow steps (non-finite gradients) in a row");
  o.add<int>("train", "max-bad-steps", 5,
             "divergence guard: a step whose loss or global gradient norm is not finite (or whose norm is above "
             "--bad-grad-norm) is skipped on every rank, its update not applied; after more than this many bad "
             "steps in a row the run stops with exit code 3, leaving the last good checkpoint as `latest` (0 = "
             "stop at the first bad step; >= 0)");
  o.add<double>("train", "bad-grad-norm", 0.0, "0",
                "a step whose global gradient norm (before clipping, after loss-scale unscaling) is above this is "
                "a bad step (see --max-bad-steps; 0 = only non-finite norms are)");
  o.add<float>("optim", "lr", d.lr, strfmt("%g", d.lr), "peak learning rate");
  o.add<float>("optim", "min-lr", d.min_lr, strfmt("%g", d.min_lr), "final learning rate (end of the decay)");
  o.add<int64_t>("optim", "warmup", d.warmup, "linear warmup steps");
  o.add<std::string>("optim", "schedule", "cosine",
                     "learning-rate schedule after the warmup: cosine (decay to --min-lr at --steps) or wsd "
                     "(warmup-stable-decay: --lr until the last --decay-frac of the steps, then linear to --min-lr)");
  o.add<double>("optim", "decay-frac", 0.2, "0.2", "wsd: the share of --steps spent decaying, in [0, 1]");
  o.add<float>("optim", "weight-decay", 0.1f, "0.1", "AdamW decoupled weight decay (matrices and embeddings only)");
  o.add<float>("optim", "beta1", 0.9f, "0.9", "AdamW beta1");
  o.add<float>("optim", "beta2", 0.95f, "0.95", "AdamW beta2");
  o.add<float>("optim", "eps", 1e-8f, "1e-8", "AdamW epsilon");
  o.add<std::string>("optim", "optimizer", "adamw",
                     "adamw (AdamW on every tensor) | muon (Muon: Nesterov momentum orthogonalised by 5 "
                     "Newton-Schulz steps, for the hidden 2-D weight matrices of the transformer blocks - attention "
                     "QKV and output, MLP up and down, cross-attention, the speech encoder's blocks - with no "
                     "weight decay; AdamW with --lr, --weight-decay, --beta1/2 keeps embeddings, heads, LayerNorms, "
                     "biases and convolutions). Recorded in the checkpoint: a run resumes only with the optimizer "
                     "it was trained with (docs/OPTIMIZERS.md)");
  o.add<float>("optim", "muon-lr", 0.02f, "0.02",
               "Muon's peak learning rate (--optimizer muon); it follows the --schedule of --lr: muon-lr * "
               "lr(step) / lr. Each update is scaled by max(1, rows/cols)^0.5");
  o.add<float>("optim", "muon-momentum", 0.95f, "0.95", "Muon's (Nesterov) momentum, in [0, 1)");
  o.add<float>("optim", "grad-clip", 1.0f, "1.0", "clip the global gradient norm to this (0 = off)");
  o.add<int>("parallel", "tp", 1, "tensor-parallel degree (divides the ranks, heads, MLP width, padded vocab)");
  o.add<int>("parallel", "zero", 0, "1 = ZeRO-1: shard optimizer state over data-parallel ranks");
  o.add<double>("parallel", "bucket-mb", 16.0, "16", "data-parallel gradient all-reduce bucket size (MiB)");
  o.add<std::string>("parallel", "grad-reduce-dtype", "fp32",
                     "dtype of the data-parallel gradient reduction: fp32 (exact average; default) | bf16 (half "
                     "the bytes on the wire, for bandwidth-bound clusters; each gradient is rounded to 8 mantissa "
                     "bits, ~0.4% relative error per element, which AdamW mostly tolerates but which changes "
                     "results and the gradient norm slightly)");
  o.add<double>("parallel", "watchdog-timeout", 600.0, "600",
                "seconds a rank may wait in one collective before the job is ended (exit code 79) when another "
                "rank is frozen or every rank is stuck in a collective; the error names the collective and the "
                "stuck rank(s). Time between collectives (checkpoint writes, evaluation) never counts. 0 = off; "
                "the CHORUS_WATCHDOG_TIMEOUT environment variable sets it when the flag is not given");
  o.add<std::string>("checkpoint", "save-dir", "", "where checkpoints and `latest` go (default: the run directory)");
  o.add<int64_t>("checkpoint", "save-every", 0, "checkpoint every N steps (0 = only at the end and on a stop)");
  o.add<int>("checkpoint", "keep-last", 0, "keep only the newest K checkpoints, deleting older ones after a newer one "
                                           "is committed (0 = keep all)");
  o.add<std::string>("checkpoint", "resume", "",
                     "auto = continue from the newest valid checkpoint in save-dir (fresh start if none); or a "
                     "checkpoint directory / save directory to continue from (refused if damaged)");
  o.add<double>("system", "peak-gflops", 0.0, "0",
                "peak FLOP/s (in GFLOP/s) for MFU; 0 = measure cblas_sgemm at start-up");
  o.add<double>("system", "max-memory", 0.0, "0",
                "GiB of memory one rank may use; a layout that needs more (parameters, gradients, optimizer state "
                "and activations, as `chorus plan` computes them) is refused before anything is allocated (0 = "
                "MemAvailable of /proc/meminfo shared by the ranks on each host; >= 0)");
  o.add<int>("system", "threads", 0, "OpenMP/OpenBLAS threads (0 = all cores)");
  o.add<std::string>("system", "gemm", "auto",
                     "GEMM path for bf16/fp16 matmuls: auto (oneDNN where the CPU has bf16/fp16 matrix units and "
                     "oneDNN picks a non-reference kernel, else OpenBLAS sbgemm where exported and the CPU has "
                     "AVX512-BF16, else convert to fp32 + SGEMM) | onednn | sbgemm | convert; the CHORUS_GEMM "
                     "environment variable sets the same");
  o.add_switch("system", "quiet", "no per-step lines (metrics.jsonl is still written)");
}

train::TrainOptions read_train_flags(const po::variables_map& vm) {
  const int threads = vm["threads"].as<int>();
  CHORUS_CHECK(threads >= 0, "threads: must be >= 0, got %d", threads);
  if (threads > 0) omp_set_num_threads(threads);
  train::TrainOptions p;
  p.steps = vm["steps"].as<int64_t>();
  p.grad_accum = vm["grad-accum"].as<int>();
  p.batch_warmup = vm["batch-warmup"].as<int64_t>();
  p.seed = vm["seed"].as<uint64_t>();
  p.run_dir = vm["run-dir"].as<std::string>();
  p.eval_every = vm["eval-every"].as<int64_t>();
  p.log_every = vm["log-every"].as<int>();
  p.rank_stats_every = vm["rank-stats-every"].as<int64_t>();
  p.lr = vm["lr"].as<float>();
  p.min_lr = vm["min-lr"].as<float>();
  p.warmup = vm["warmup"].as<int64_t>();
  p.schedule = optim::parse_schedule(vm["schedule"].as<std::string>());
  p.decay_frac = vm["decay-frac"].as<double>();
  p.adamw.weight_decay = vm["weight-decay"].as<float>();
  p.adamw.beta1 = vm["beta1"].as<float>();
  p.adamw.beta2 = vm["beta2"].as<float>();
  p.adamw.eps = vm["eps"].as<float>();
  p.grad_clip = vm["grad-clip"].as<float>();
  p.optimizer = optim::parse_optimizer(vm["optimizer"].as<std::string>());
  p.muon.lr = vm["muon-lr"].as<float>();
  p.muon.momentum = vm["muon-momentum"].as<float>();
  p.peak_gflops = vm["peak-gflops"].as<double>();
  p.max_memory_gib = vm["max-memory"].as<double>();
  // Flags where 0 means "off" / "measure": a negative value is refused, not read as 0.
  CHORUS_CHECK(p.grad_clip >= 0, "grad-clip: must be >= 0 (0 = no clipping), got %g", p.grad_clip);
  CHORUS_CHECK(p.peak_gflops >= 0, "peak-gflops: must be >= 0 (0 = measure it), got %g", p.peak_gflops);
  CHORUS_CHECK(p.adamw.weight_decay >= 0, "weight-decay: must be >= 0 (0 = none), got %g", p.adamw.weight_decay);
  p.quiet = vm["quiet"].as<bool>();
  p.stop_at = vm["stop-at"].as<int64_t>();
  p.save_dir = vm["save-dir"].as<std::string>();
  p.save_every = vm["save-every"].as<int64_t>();
  p.keep_last = vm["keep-last"].as<int>();
  p.resume = vm["resume"].as<std::string>();
  p.zero_stage = vm["zero"].as<int>();
  p.bucket_mb = vm["bucket-mb"].as<double>();
  p.watchdog_timeout_s = vm["watchdog-timeout"].as<double>();
  if (const char* w = std::getenv("CHORUS_WATCHDOG_TIMEOUT"); w && vm["watchdog-timeout"].defaulted()) {
    char* end = nullptr;
    p.watchdog_timeout_s = std::strtod(w, &end);
    CHORUS_CHECK(end != w && *end == '\0', "CHORUS_WATCHDOG_TIMEOUT: expected seconds (0 = off), got '%s'", w);
  }
  p.precision = parse_precision(vm["precision"].as<std::string>());
  if (vm["gemm"].as<std::string>() != "auto" || std::getenv("CHORUS_GEMM") == nullptr)
    backend::cpu::set_gemm_path(backend::cpu::parse_gemm_path(vm["gemm"].as<std::string>()));
  if (p.precision != Precision::fp32) backend::cpu::gemm_path_for(p.precision);  // a forced path that cannot run: refuse now
  const std::string scaling = vm["loss-scaling"].as<std::string>();
  CHORUS_CHECK(scaling == "auto" || scaling == "dynamic" || scaling == "off",
               "loss-scaling: expected auto, dynamic or off, got '%s'", scaling.c_str());
  p.loss_scaler.enabled = scaling == "dynamic" || (scaling == "auto" && p.precision == Precision::fp16);
  p.loss_scaler.init_scale = vm["loss-scale-init"].as<double>();
  p.loss_scaler.growth = vm["loss-scale-growth"].as<double>();
  p.loss_scaler.growth_interval = vm["loss-scale-interval"].as<int64_t>();
  p.loss_scaler.backoff = vm["loss-scale-backoff"].as<double>();
  p.max_skipped_in_a_row = vm["max-skipped-steps"].as<int>();
  p.max_bad_steps = vm["max-bad-steps"].as<int>();
  p.bad_grad_norm = vm["bad-grad-norm"].as<double>();
  if (p.precision == Precision::fp16 && !p.loss_scaler.enabled)
    log_warn("precision fp16 without loss scaling: small gradients underflow to zero (use --loss-scaling auto)");
  const std::string reduce = vm["grad-reduce-dtype"].as<std::string>();
  CHORUS_CHECK(reduce == "fp32" || reduce == "bf16", "grad-reduce-dtype: expected fp32 or bf16, got '%s'",
               reduce.c_str());
  p.grad_reduce_dtype = reduce == "bf16" ? dist::DType::bf16 : dist::DType::f32;
  for (const char* name :
       {"CHORUS_FAIL_AT", "CHORUS_CKPT_KILL_AT", "CHORUS_INJECT_INF", "CHORUS_INJECT_NAN_LOSS", "CHORUS_STEP_DELAY_MS"})
    if (const char* v = std::getenv(name))
      log_warn(
          "%s=%s is set: a fault-injection switch for the tests: this run gets faults on purpose "
          "(docs/RELIABILITY.md)",
          name, v);
  p.inject_inf_grad = injected_fault("CHORUS_INJECT_INF");
  p.inject_nan_loss = injected_fault("CHORUS_INJECT_NAN_LOSS");
  if (const char* d = std::getenv("CHORUS_STEP_DELAY_MS")) {
    char* end = nullptr;
    const long ms = std::strtol(d, &end, 10);
    CHORUS_CHECK(end != d && *end == '\0' && ms >= 0 && ms <= 60000,
                 "CHORUS_STEP_DELAY_MS: expected milliseconds from 0 to 60000, got '%s'", d);
    p.step_delay_ms = static_cast<int>(ms);
  }
  if (const char* f = std::getenv("CHORUS_FAIL_AT")) {
    CHORUS_CHECK(std::sscanf(f, "%d:%ld", &p.fail_rank, &p.fail_step) == 2,
                 "CHORUS_FAIL_AT: expected RANK:STEP, got '%s'", f);
  }
  p.validate();
  return p;
}

void add_gpt_arch_flags(OptionSet& o) {
  o.add<std::string>("model", "pos", "learned",
                     "positions: learned (GPT-2's wpe table) | rotary (RoPE on every head's q and k, no table)");
  o.add<std::string>("model", "norm", "layernorm", "block norms: layernorm (GPT-2, with bias) | rmsnorm (gain only)");
  o.add_switch("model", "qk-norm", "RMS-normalise every head's q and k before attention (parameter-free)");
  o.add<std::string>("model", "mlp", "gelu",
                     "MLP: gelu (GPT-2, width 4d) | relu2 (ReLU squared, 4d) | swiglu (SwiGLU, width 8d/3 rounded "
                     "up to a multiple of 64)");
  o.add_switch("model", "untied-head", "an LM head of its own (lm_head.weight) instead of the token embedding");
  o.add<float>("model", "logit-softcap", 0.0f, "0",
               "soft-cap the logits at this value, cap * tanh(logits / cap) (0 = off; the speedrun uses 15-30)");
  o.add<float>("model", "rope-theta", 10000.0f, "10000", "rotary base (with --pos rotary)");
  o.add<std::string>("model", "attention", "flash",
                     "causal attention kernel (not part of the model; either loads any checkpoint): flash (tiled, keeps "
                     "only the softmax statistics: memory linear in the sequence length) | full (keeps every "
                     "T x T probability matrix for backward)");
}

void read_gpt_arch_flags(const po::variables_map& vm, models::GptConfig& c) {
  c.pos = models::parse_pos(vm["pos"].as<std::string>(), "pos");
  c.norm = models::parse_norm(vm["norm"].as<std::string>(), "norm");
  c.qk_norm = vm["qk-norm"].as<bool>();
  c.mlp = models::parse_mlp(vm["mlp"].as<std::string>(), "mlp");
  c.tied_head = !vm["untied-head"].as<bool>();
  c.logit_softcap = vm["logit-softcap"].as<float>();
  c.rope_theta = vm["rope-theta"].as<float>();
  const std::string attention = vm["attention"].as<std::string>();
  CHORUS_CHECK(attention == "flash" || attention == "full", "attention: expected flash or full, got '%s'",
               attention.c_str());
  c.flash_attention = attention == "flash";
  CHORUS_CHECK(c.logit_softcap >= 0.0f, "logit-softcap: must be >= 0 (0 = off), got %g",
               static_cast<double>(c.logit_softcap));
}

}  // namespace chorus::apps
