#include "train/pretrain.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cpu/peak_flops.h"
#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "optim/distributed.h"
#include "optim/schedule.h"
#include "train/generate.h"
#include "train/metrics.h"

namespace chorus::train {

namespace fs = std::filesystem;

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void validate_options(const PretrainOptions& o) {
  CHORUS_CHECK(o.batch >= 1, "batch: must be >= 1, got %d", o.batch);
  CHORUS_CHECK(o.seq_len >= 1, "seq-len: must be >= 1, got %d", o.seq_len);
  CHORUS_CHECK(o.seq_len <= o.model.context, "seq-len: %d exceeds the model context %d", o.seq_len,
               o.model.context);
  CHORUS_CHECK(o.grad_accum >= 1, "grad-accum: must be >= 1, got %d", o.grad_accum);
  CHORUS_CHECK(o.steps >= 1, "steps: must be >= 1, got %lld", static_cast<long long>(o.steps));
  CHORUS_CHECK(o.eval_every >= 0, "eval-every: must be >= 0, got %lld", static_cast<long long>(o.eval_every));
  CHORUS_CHECK(o.eval_batches >= 1, "eval-batches: must be >= 1, got %d", o.eval_batches);
  CHORUS_CHECK(o.log_every >= 1, "log-every: must be >= 1, got %d", o.log_every);
  CHORUS_CHECK(!o.run_dir.empty(), "run-dir: must be set");
}

struct Evaluation {
  float loss = 0.0f;
  float bpb = 0.0f;
};

// Mean loss over the same first `n_batches` global validation batches every
// time; each DP rank evaluates its slice and the mean is taken over DP.
Evaluation evaluate(models::Gpt& model, data::DataLoader& loader, const data::TokenStream& stream, int n_batches,
                    std::vector<int32_t>& x, std::vector<int32_t>& y, int B, int T, dist::Communicator& dp) {
  loader.set_consumed(0);
  const uint64_t global_batch = static_cast<uint64_t>(B) * static_cast<uint64_t>(dp.size());
  const int max_batches = static_cast<int>(std::max<uint64_t>(1, loader.n_samples() / global_batch));
  n_batches = std::min(n_batches, max_batches);
  double total = 0.0;
  for (int i = 0; i < n_batches; ++i) {
    loader.next_batch(x.data(), y.data());
    total += model.forward(x.data(), y.data(), B, T);
  }
  total = dp.all_reduce_scalar(total, dist::ReduceOp::avg);
  Evaluation e;
  e.loss = static_cast<float>(total / n_batches);
  // bits per byte: nats/token -> bits/token, times tokens per raw byte of the split.
  const double tokens_per_byte = static_cast<double>(stream.n_tokens()) / static_cast<double>(stream.n_bytes());
  e.bpb = static_cast<float>(e.loss / std::log(2.0) * tokens_per_byte);
  return e;
}

}  // namespace

PretrainResult pretrain(const PretrainOptions& opt_in) {
  PretrainOptions opt = opt_in;
  const auto tokenizer = data::Tokenizer::load(opt.tokenizer_path);
  if (opt.model.vocab_size == 0) opt.model.vocab_size = tokenizer.vocab_size();
  CHORUS_CHECK(opt.model.vocab_size == tokenizer.vocab_size(),
               "vocab-size: the config says %d but tokenizer '%s' has %d tokens (set vocab-size = 0 to take the "
               "tokenizer's, or train a tokenizer with --vocab %d)",
               opt.model.vocab_size, opt.tokenizer_path.c_str(), tokenizer.vocab_size(), opt.model.vocab_size);
  opt.model.validate();
  validate_options(opt);
  optim::CosineSchedule schedule{opt.lr, opt.min_lr, opt.warmup, opt.steps};
  schedule.validate();

  dist::ParallelGrid single = dist::ParallelGrid::single();
  dist::ParallelGrid& grid = opt.grid ? *opt.grid : single;
  grid.check_divides(opt.model.n_head, 4 * opt.model.n_embd, opt.model.padded_vocab());
  const bool writer = grid.world_rank() == 0;
  if (writer) fs::create_directories(opt.run_dir);
  const int B = opt.batch, T = opt.seq_len;
  const int dp = grid.dp_size();
  auto train_stream = std::make_shared<const data::TokenStream>(opt.data_dir, "train", tokenizer.hash(),
                                                                tokenizer.vocab_size());
  auto val_stream = std::make_shared<const data::TokenStream>(opt.data_dir, "val", tokenizer.hash(),
                                                              tokenizer.vocab_size());
  data::DataLoader train_loader(train_stream, T, B * dp, grid.dp_rank(), dp, opt.seed);
  data::DataLoader val_loader(val_stream, T, B * dp, grid.dp_rank(), dp, opt.seed ^ 0x76616cull);

  models::Gpt model(opt.model, B, T, &grid.tp());
  model.init_weights(opt.seed);
  std::vector<optim::Range> decay, replicated;
  for (const auto& p : model.param_table()) {
    if (p.decay) decay.push_back({p.offset, p.offset + p.numel});
    if (p.tp_axis < 0) replicated.push_back({p.offset, p.offset + p.numel});
  }
  optim::DistributedOptimizerConfig ocfg;
  ocfg.adamw = opt.adamw;
  ocfg.zero_stage = opt.zero_stage;
  ocfg.bucket_floats = std::max<size_t>(1, static_cast<size_t>(opt.bucket_mb * (1 << 20) / sizeof(float)));
  ocfg.grad_clip = opt.grad_clip;
  optim::DistributedOptimizer optimizer(model.n_params(), decay, replicated, ocfg, grid.dp(), grid.tp());

  const double peak_gflops = opt.peak_gflops > 0 ? opt.peak_gflops : backend::cpu::measure_sgemm_gflops();
  const double flops_per_token = model.flops_per_token(T);
  const int64_t tokens_per_step = static_cast<int64_t>(B) * T * opt.grad_accum * dp;

  if (writer) {
    nlohmann::json cfg = {
        {"model", {{"n_layer", opt.model.n_layer}, {"n_embd", opt.model.n_embd}, {"n_head", opt.model.n_head},
                   {"vocab_size", opt.model.vocab_size}, {"context", opt.model.context}}},
        {"tokenizer", fs::absolute(opt.tokenizer_path).string()},
        {"tokenizer_hash", tokenizer.hash()},
        {"data", fs::absolute(opt.data_dir).string()},
        {"batch", B}, {"seq_len", T}, {"grad_accum", opt.grad_accum}, {"steps", opt.steps}, {"seed", opt.seed},
        {"lr", opt.lr}, {"min_lr", opt.min_lr}, {"warmup", opt.warmup}, {"grad_clip", opt.grad_clip},
        {"weight_decay", opt.adamw.weight_decay}, {"beta1", opt.adamw.beta1}, {"beta2", opt.adamw.beta2}};
    std::ofstream(fs::path(opt.run_dir) / "config.json") << cfg.dump(2) << "\n";
  }

  log_info("model: GPT L%d d%d h%d vocab %d (padded %d) context %d: %.2fM parameters (%.2fM for FLOPs)",
           opt.model.n_layer, opt.model.n_embd, opt.model.n_head, opt.model.vocab_size, opt.model.padded_vocab(),
           opt.model.context, model.n_params() / 1e6, model.n_flop_params() / 1e6);
  log_info("layout: %s, zero %d; data: %llu train tokens (%llu windows of %d), %llu val tokens; %lld "
           "tokens/step (batch %d x seq %d x accum %d x dp %d)",
           grid.describe().c_str(), opt.zero_stage, static_cast<unsigned long long>(train_stream->n_tokens()),
           static_cast<unsigned long long>(train_loader.n_samples()), T,
           static_cast<unsigned long long>(val_stream->n_tokens()), static_cast<long long>(tokens_per_step), B, T,
           opt.grad_accum, dp);
  log_info("memory per rank: params %.1f MiB, grads %.1f MiB, Adam state %.1f MiB%s, activations %.1f MiB; %d "
           "threads; MFU against %.1f GFLOP/s per rank (%s)",
           model.n_params() * 4.0 / (1 << 20), model.n_params() * 4.0 / (1 << 20),
           optimizer.state_bytes() / double(1 << 20), opt.zero_stage ? " (ZeRO-1 slice)" : "",
           model.activation_bytes() / double(1 << 20), omp_get_max_threads(), peak_gflops,
           opt.peak_gflops > 0 ? "from config" : "measured sgemm");

  MetricsWriter metrics((fs::path(opt.run_dir) / "metrics.jsonl").string(), writer, /*truncate=*/true);
  std::vector<int32_t> x(static_cast<size_t>(B) * T), y(x.size());
  PretrainResult result;
  std::vector<double> tok_rates, mfus;

  for (int64_t step = 0; step < opt.steps; ++step) {
    Timer timer;
    model.zero_grad();
    double loss_sum = 0.0;
    for (int micro = 0; micro < opt.grad_accum; ++micro) {
      train_loader.next_batch(x.data(), y.data());
      loss_sum += model.forward(x.data(), y.data(), B, T);
      model.backward(1.0f / static_cast<float>(opt.grad_accum));
    }
    CHORUS_CHECK(!(grid.world_rank() == opt.fail_rank && step == opt.fail_step),
                 "injected failure at step %lld (CHORUS_FAIL_AT)", static_cast<long long>(step));
    // Gradients are synchronised once per optimizer step, after the last micro-batch.
    const float loss =
        static_cast<float>(grid.dp().all_reduce_scalar(loss_sum / opt.grad_accum, dist::ReduceOp::avg));
    CHORUS_CHECK(std::isfinite(loss), "training diverged: loss is %g at step %lld (lower lr, check data)",
                 static_cast<double>(loss), static_cast<long long>(step));
    const float lr = schedule.lr_at(step);
    const double norm = optimizer.step(model.params(), model.grads(), lr, step + 1).grad_norm;
    const double secs = timer.seconds();
    const double tok_s = static_cast<double>(tokens_per_step) / secs;
    const double mfu = flops_per_token * tok_s / (peak_gflops * 1e9 * grid.world_size());
    if (step > 0 || opt.steps == 1) {
      tok_rates.push_back(tok_s);
      mfus.push_back(mfu);
    }
    if (step == 0) result.first_loss = loss;
    result.last_loss = loss;
    result.steps_done = step + 1;

    const uint64_t peak_mem = peak_rss_bytes();
    if (!opt.quiet && (step % opt.log_every == 0 || step + 1 == opt.steps)) {
      log_info("step %6lld/%lld | loss %.4f | lr %.2e | grad-norm %.3f | %8.0f tok/s | MFU %5.1f%% | peak mem "
               "%.0f MiB | %.0f ms",
               static_cast<long long>(step + 1), static_cast<long long>(opt.steps), loss, lr, norm, tok_s,
               100.0 * mfu, peak_mem / double(1 << 20), secs * 1e3);
    }
    nlohmann::json row = {{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                          {"tokens_per_s", tok_s}, {"mfu", mfu}, {"peak_mem_mib", peak_mem / double(1 << 20)},
                          {"tokens", (step + 1) * tokens_per_step}};
    const bool last = step + 1 == opt.steps;
    if (last || (opt.eval_every > 0 && (step + 1) % opt.eval_every == 0)) {
      Evaluation ev = evaluate(model, val_loader, *val_stream, opt.eval_batches, x, y, B, T, grid.dp());
      row["val_loss"] = ev.loss;
      row["val_bpb"] = ev.bpb;
      result.val_loss = ev.loss;
      result.val_bpb = ev.bpb;
      if (!opt.quiet) log_info("step %6lld/%lld | val loss %.4f | val bpb %.4f", static_cast<long long>(step + 1),
                               static_cast<long long>(opt.steps), ev.loss, ev.bpb);
    }
    metrics.write(row);
  }
  result.tokens_per_s = median(tok_rates);
  result.mfu = median(mfus);

  result.weights_path = (fs::path(opt.run_dir) / "model.h5").string();
  checkpoint::save_weights(result.weights_path, model, tokenizer.hash(), grid);
  log_info("saved %s", result.weights_path.c_str());

  if (opt.sample_tokens > 0 && grid.tp_size() == 1 && writer) {
    GenerateOptions g;
    g.max_new_tokens = opt.sample_tokens;
    g.temperature = opt.sample_temperature;
    g.top_k = opt.sample_top_k;
    g.seed = opt.seed;
    auto ids = generate(model, {tokenizer.eot()}, g, tokenizer.eot());
    result.sample = tokenizer.decode(ids);
  }
  return result;
}

}  // namespace chorus::train
