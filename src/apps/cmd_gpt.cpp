// chorus pretrain / generate.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/options.h"
#include "backend/cpu/gemm.h"
#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "train/generate.h"
#include "train/pretrain.h"

namespace chorus::apps {

namespace fs = std::filesystem;

int cmd_pretrain(int argc, char** argv, dist::Runtime& rt) {
  OptionSet o("pretrain",
              "Pretrains a GPT-2-style model on HDF5 text shards (CPU backend; fp32, bf16 or fp16 compute with fp32\n"
              "master weights). Prints one line per step\n"
              "and writes <run-dir>/metrics.jsonl, <run-dir>/config.json and the final weights <run-dir>/model.h5.\n"
              "Global batch per optimizer step = batch x grad-accum x DP sequences of seq-len tokens.\n"
              "Distributed: mpirun -np N chorus pretrain ... --tp T runs DP = N / T data-parallel replicas of a\n"
              "model split over T tensor-parallel ranks (TP groups are consecutive ranks).\n"
              "Checkpoints (docs/CHECKPOINTS.md): <save-dir>/step-NNNNNNNN/ every --save-every steps, at the end\n"
              "and on a stop; --resume auto continues bit-exactly, also under another TP / DP / ZeRO layout.\n"
              "SIGTERM or SIGUSR1 on any rank: every rank finishes the step, a checkpoint is written and the\n"
              "job exits with code 75 (requeue and run again with --resume auto).");
  o.add<int>("model", "n-layer", 6, "transformer blocks (L)");
  o.add<int>("model", "n-embd", 384, "model width (d)");
  o.add<int>("model", "n-head", 6, "attention heads (must divide n-embd)");
  o.add<int>("model", "vocab-size", 0, "vocabulary size; 0 = the tokenizer's (a different value is refused)");
  o.add<int>("model", "context", 256, "maximum sequence length (position-embedding rows)");
  o.add<std::string>("data", "tokenizer", "tokenizer.json", "tokenizer JSON; its hash must match the shards'");
  o.add<std::string>("data", "data", "shards", "directory of train_*.h5 / val_*.h5 shards from prepare-text");
  o.add<int>("data", "seq-len", 256, "tokens per training sequence (T <= context)");
  o.add<int64_t>("train", "steps", 1000, "optimizer steps; the LR schedule is built for this many");
  o.add<int>("train", "batch", 8, "sequences per micro-batch");
  o.add<int>("train", "grad-accum", 1, "micro-batches accumulated per optimizer step");
  o.add<uint64_t>("train", "seed", 1337, "seed for initialisation, data order and sampling");
  o.add<std::string>("train", "run-dir", "checkpoints/run", "output directory of this run");
  o.add<int64_t>("train", "stop-at", 0,
                 "end after step K with a checkpoint, as a pre-emption would (0 = run to --steps); exit code 0");
  o.add<int64_t>("train", "eval-every", 100, "validate every N steps (and always after the last; 0 = only then)");
  o.add<int>("train", "eval-batches", 8, "validation micro-batches per evaluation");
  o.add<int>("train", "log-every", 1, "print a step line every N steps (metrics.jsonl gets every step)");
  o.add<int>("train", "sample-tokens", 0, "after training, print a sample of this many generated tokens");
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
  o.add<int>("train", "max-skipped-steps", 20, "stop with an error after this many skipped (non-finite) steps in a row");
  o.add<float>("optim", "lr", 6e-4f, "6e-4", "peak learning rate");
  o.add<float>("optim", "min-lr", 6e-5f, "6e-5", "final learning rate of the cosine decay");
  o.add<int64_t>("optim", "warmup", 100, "linear warmup steps");
  o.add<float>("optim", "weight-decay", 0.1f, "0.1", "AdamW decoupled weight decay (matrices and embeddings only)");
  o.add<float>("optim", "beta1", 0.9f, "0.9", "AdamW beta1");
  o.add<float>("optim", "beta2", 0.95f, "0.95", "AdamW beta2");
  o.add<float>("optim", "eps", 1e-8f, "1e-8", "AdamW epsilon");
  o.add<float>("optim", "grad-clip", 1.0f, "1.0", "clip the global gradient norm to this (0 = off)");
  o.add<int>("parallel", "tp", 1, "tensor-parallel degree (divides the ranks, heads, MLP width, padded vocab)");
  o.add<int>("parallel", "zero", 0, "1 = ZeRO-1: shard optimizer state over data-parallel ranks");
  o.add<double>("parallel", "bucket-mb", 16.0, "16", "data-parallel gradient all-reduce bucket size (MiB)");
  o.add<std::string>("parallel", "grad-reduce-dtype", "fp32",
                     "dtype of the data-parallel gradient reduction: fp32 (exact average; default) | bf16 (half "
                     "the bytes on the wire, for bandwidth-bound clusters; each gradient is rounded to 8 mantissa "
                     "bits, ~0.4% relative error per element, which AdamW mostly tolerates but which changes "
                     "results and the gradient norm slightly)");
  o.add<std::string>("checkpoint", "save-dir", "", "where checkpoints and `latest` go (default: the run directory)");
  o.add<int64_t>("checkpoint", "save-every", 0, "checkpoint every N steps (0 = only at the end and on a stop)");
  o.add<int>("checkpoint", "keep-last", 0, "keep only the newest K checkpoints, deleting older ones after a newer one "
                                           "is committed (0 = keep all)");
  o.add<std::string>("checkpoint", "resume", "",
                     "auto = continue from the newest valid checkpoint in save-dir (fresh start if none); or a "
                     "checkpoint directory / save directory to continue from (refused if damaged)");
  o.add<double>("system", "peak-gflops", 0.0, "0",
                "peak FLOP/s (in GFLOP/s) for MFU; 0 = measure cblas_sgemm at start-up");
  o.add<int>("system", "threads", 0, "OpenMP/OpenBLAS threads (0 = all cores)");
  o.add<std::string>("system", "gemm", "auto",
                     "GEMM path for bf16/fp16 matmuls: auto (oneDNN where the CPU has bf16/fp16 matrix units and "
                     "oneDNN picks a non-reference kernel, else OpenBLAS sbgemm where exported and the CPU has "
                     "AVX512-BF16, else convert to fp32 + SGEMM) | onednn | sbgemm | convert; the CHORUS_GEMM "
                     "environment variable sets the same");
  o.add_switch("system", "quiet", "no per-step lines (metrics.jsonl is still written)");
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  const int threads = vm["threads"].as<int>();
  CHORUS_CHECK(threads >= 0, "threads: must be >= 0, got %d", threads);
  if (threads > 0) omp_set_num_threads(threads);

  train::PretrainOptions p;
  p.model.n_layer = vm["n-layer"].as<int>();
  p.model.n_embd = vm["n-embd"].as<int>();
  p.model.n_head = vm["n-head"].as<int>();
  p.model.vocab_size = vm["vocab-size"].as<int>();
  p.model.context = vm["context"].as<int>();
  p.tokenizer_path = vm["tokenizer"].as<std::string>();
  p.data_dir = vm["data"].as<std::string>();
  p.seq_len = vm["seq-len"].as<int>();
  p.steps = vm["steps"].as<int64_t>();
  p.batch = vm["batch"].as<int>();
  p.grad_accum = vm["grad-accum"].as<int>();
  p.seed = vm["seed"].as<uint64_t>();
  p.run_dir = vm["run-dir"].as<std::string>();
  p.eval_every = vm["eval-every"].as<int64_t>();
  p.eval_batches = vm["eval-batches"].as<int>();
  p.log_every = vm["log-every"].as<int>();
  p.sample_tokens = vm["sample-tokens"].as<int>();
  p.lr = vm["lr"].as<float>();
  p.min_lr = vm["min-lr"].as<float>();
  p.warmup = vm["warmup"].as<int64_t>();
  p.adamw.weight_decay = vm["weight-decay"].as<float>();
  p.adamw.beta1 = vm["beta1"].as<float>();
  p.adamw.beta2 = vm["beta2"].as<float>();
  p.adamw.eps = vm["eps"].as<float>();
  p.grad_clip = vm["grad-clip"].as<float>();
  p.peak_gflops = vm["peak-gflops"].as<double>();
  p.quiet = vm["quiet"].as<bool>();
  p.stop_at = vm["stop-at"].as<int64_t>();
  p.save_dir = vm["save-dir"].as<std::string>();
  p.save_every = vm["save-every"].as<int64_t>();
  p.keep_last = vm["keep-last"].as<int>();
  p.resume = vm["resume"].as<std::string>();
  CHORUS_CHECK(p.sample_tokens >= 0, "sample-tokens: must be >= 0, got %d", p.sample_tokens);
  p.zero_stage = vm["zero"].as<int>();
  CHORUS_CHECK(p.zero_stage == 0 || p.zero_stage == 1, "zero: must be 0 or 1, got %d", p.zero_stage);
  p.bucket_mb = vm["bucket-mb"].as<double>();
  CHORUS_CHECK(p.bucket_mb > 0, "bucket-mb: must be > 0, got %g", p.bucket_mb);
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
  if (p.precision == Precision::fp16 && !p.loss_scaler.enabled)
    log_warn("precision fp16 without loss scaling: small gradients underflow to zero (use --loss-scaling auto)");
  const std::string reduce = vm["grad-reduce-dtype"].as<std::string>();
  CHORUS_CHECK(reduce == "fp32" || reduce == "bf16", "grad-reduce-dtype: expected fp32 or bf16, got '%s'",
               reduce.c_str());
  p.grad_reduce_dtype = reduce == "bf16" ? dist::DType::bf16 : dist::DType::f32;
  if (const char* f = std::getenv("CHORUS_INJECT_INF")) {
    CHORUS_CHECK(std::sscanf(f, "%d:%ld", &p.nonfinite_rank, &p.nonfinite_step) == 2,
                 "CHORUS_INJECT_INF: expected RANK:STEP, got '%s'", f);
  }
  if (const char* f = std::getenv("CHORUS_FAIL_AT")) {
    CHORUS_CHECK(std::sscanf(f, "%d:%ld", &p.fail_rank, &p.fail_step) == 2,
                 "CHORUS_FAIL_AT: expected RANK:STEP, got '%s'", f);
  }
  dist::ParallelGrid grid(rt, vm["tp"].as<int>());
  p.grid = &grid;

  auto r = train::pretrain(p);
  if (r.stopped) return r.stop_signal != 0 ? train::kExitPreempted : 0;
  if (r.steps_done == r.start_step) {
    log_info("done: the run was already complete at step %lld", static_cast<long long>(r.steps_done));
    return 0;
  }
  log_info("done: %lld steps, train loss %.4f -> %.4f, val loss %.4f, val bpb %.4f, median %.0f tok/s, MFU "
           "%.1f%%%s",
           static_cast<long long>(r.steps_done), r.first_loss, r.last_loss, r.val_loss, r.val_bpb, r.tokens_per_s,
           100.0 * r.mfu,
           p.loss_scaler.enabled
               ? strfmt(", loss scale %g, %lld steps skipped", r.loss_scale, static_cast<long long>(r.skipped_steps))
                     .c_str()
               : "");
  if (!r.sample.empty()) log_info("sample:\n%s\n", r.sample.c_str());
  return 0;
}

int cmd_generate(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "generate");
  OptionSet o("generate",
              "Samples text from trained weights with a KV cache (temperature / top-k; temperature 0 = greedy).");
  o.add<std::string>("model", "run-dir", "", "a pretrain run directory (uses its model.h5 and tokenizer)");
  o.add<std::string>("model", "weights", "", "weights file (default: <run-dir>/model.h5)");
  o.add<std::string>("model", "tokenizer", "", "tokenizer JSON (default: the one recorded in <run-dir>/config.json)");
  o.add<std::string>("sampling", "prompt", "", "text to continue (empty: start from <|endoftext|>)");
  o.add<int>("sampling", "max-new-tokens", 200, "tokens to generate at most");
  o.add<float>("sampling", "temperature", 0.8f, "0.8", "softmax temperature (0 = greedy)");
  o.add<int>("sampling", "top-k", 40, "sample among the k most likely tokens (0 = all)");
  o.add<uint64_t>("sampling", "seed", 1, "sampling seed");
  o.add<int>("system", "threads", 0, "OpenMP threads (0 = all cores)");
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  if (vm["threads"].as<int>() > 0) omp_set_num_threads(vm["threads"].as<int>());
  std::string run_dir = vm["run-dir"].as<std::string>();
  std::string weights = vm["weights"].as<std::string>();
  std::string tok_path = vm["tokenizer"].as<std::string>();
  if (weights.empty()) {
    CHORUS_CHECK(!run_dir.empty(), "weights: give --weights FILE or --run-dir DIR");
    weights = (fs::path(run_dir) / "model.h5").string();
  }
  if (tok_path.empty()) {
    CHORUS_CHECK(!run_dir.empty(), "tokenizer: give --tokenizer FILE or --run-dir DIR");
    const auto cfg_path = fs::path(run_dir) / "config.json";
    std::ifstream in(cfg_path);
    CHORUS_CHECK(in.good(), "tokenizer: cannot read '%s' to find it (give --tokenizer)", cfg_path.c_str());
    nlohmann::json cfg;
    try {
      in >> cfg;
      tok_path = cfg.at("tokenizer").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(strfmt("'%s': field 'tokenizer': %s", cfg_path.c_str(), e.what()));
    }
  }
  auto tok = data::Tokenizer::load(tok_path);
  auto header = checkpoint::read_weights_header(weights);
  models::Gpt model(header.config, 1, header.config.context, nullptr);
  checkpoint::load_weights(weights, model, tok.hash());

  train::GenerateOptions g;
  g.max_new_tokens = vm["max-new-tokens"].as<int>();
  g.temperature = vm["temperature"].as<float>();
  g.top_k = vm["top-k"].as<int>();
  g.seed = vm["seed"].as<uint64_t>();
  CHORUS_CHECK(g.max_new_tokens >= 0, "max-new-tokens: must be >= 0");
  CHORUS_CHECK(g.temperature >= 0, "temperature: must be >= 0");
  const std::string prompt = vm["prompt"].as<std::string>();
  std::vector<uint32_t> ids = prompt.empty() ? std::vector<uint32_t>{tok.eot()} : tok.encode(prompt);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  train::generate(model, ids, g, tok.eot(), [&](uint32_t id) {
    const std::string& b = tok.token_bytes(id);
    std::fwrite(b.data(), 1, b.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace chorus::apps
