#include "train/pretrain.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/json_number.h"
#include "core/log.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "train/generate.h"
#include "train/plan.h"
#include "train/run_dir.h"

namespace chorus::train {

namespace fs = std::filesystem;

namespace {

// A Gpt, its text shards and next-token cross-entropy.
class GptPretrainTask final : public TrainTask {
 public:
  GptPretrainTask(const PretrainOptions& o, const data::Tokenizer& tok, dist::ParallelGrid& grid)
      : o_(o),
        tok_(tok),
        grid_(grid),
        B_(o.batch),
        T_(o.seq_len),
        train_stream_(std::make_shared<const data::TokenStream>(o.data_dir, "train", tok.hash(), tok.vocab_size())),
        val_stream_(std::make_shared<const data::TokenStream>(o.data_dir, "val", tok.hash(), tok.vocab_size())),
        train_loader_(train_stream_, T_, B_ * grid.dp_size(), grid.dp_rank(), grid.dp_size(), o.train.seed),
        val_loader_(val_stream_, T_, B_ * grid.dp_size(), grid.dp_rank(), grid.dp_size(),
                    o.train.seed ^ 0x76616cull),
        model_(o.model, B_, T_, &grid.tp(), o.train.precision),
        x_(static_cast<size_t>(B_) * T_),
        y_(x_.size()) {
    model_.init_weights(o.train.seed);
  }

  models::Gpt& model() { return model_; }

  std::span<float> params() override { return model_.params(); }
  std::span<float> grads() override { return model_.grads(); }
  const std::vector<models::ParamSpec>& param_table() const override { return model_.param_table(); }
  void zero_grad() override { model_.zero_grad(); }

  double train_micro_batch(float loss_scale) override {
    train_loader_.next_batch(x_.data(), y_.data());
    const double loss = model_.forward(x_.data(), y_.data(), B_, T_);
    model_.backward(loss_scale);
    return loss;
  }

  // Mean loss over the same first eval_batches global validation batches
  // every time; each DP rank evaluates its slice and the mean is taken over DP.
  nlohmann::json evaluate() override {
    val_loader_.set_consumed(0);
    const uint64_t global_batch = static_cast<uint64_t>(B_) * grid_.dp_size();
    const int max_batches = static_cast<int>(std::max<uint64_t>(1, val_loader_.n_samples() / global_batch));
    const int n_batches = std::min(o_.eval_batches, max_batches);
    double total = 0.0;
    for (int i = 0; i < n_batches; ++i) {
      val_loader_.next_batch(x_.data(), y_.data());
      total += model_.forward(x_.data(), y_.data(), B_, T_);
    }
    total = grid_.dp().all_reduce_scalar(total, dist::ReduceOp::avg);
    const float loss = static_cast<float>(total / n_batches);
    // bits per byte: nats/token -> bits/token, times tokens per raw byte of the split.
    const double tokens_per_byte =
        static_cast<double>(val_stream_->n_tokens()) / static_cast<double>(val_stream_->n_bytes());
    const float bpb = static_cast<float>(loss / std::log(2.0) * tokens_per_byte);
    return {{"val_loss", loss}, {"val_bpb", bpb}};
  }
  std::string describe_eval(const nlohmann::json& m) const override {
    return strfmt("loss %.4f | val bpb %.4f", m.at("val_loss").get<double>(), m.at("val_bpb").get<double>());
  }

  double tokens_per_step() const override {
    return static_cast<double>(B_) * T_ * o_.train.grad_accum * grid_.dp_size();
  }
  double flops_per_step(int64_t) const override { return pretrain_flops_per_step(o_.model, T_, tokens_per_step()); }
  models::GptMemory memory() const override { return model_.memory(); }
  uint64_t consumed() const override { return train_loader_.consumed(); }
  void set_consumed(uint64_t n) override { train_loader_.set_consumed(n); }

  void describe(checkpoint::Manifest& m) const override {
    m.model_type = "gpt";
    m.model = o_.model;
    m.tokenizer_hash = tok_.hash();
    m.eot_token = tok_.eot();
    m.sampler.seq_len = T_;
    m.sampler.samples_per_step = static_cast<uint64_t>(B_) * grid_.dp_size() * o_.train.grad_accum;
    m.run = {{"batch", B_}, {"seq_len", T_}, {"data", fs::absolute(o_.data_dir).string()},
             {"tokenizer", fs::absolute(o_.tokenizer_path).string()}};
  }

  void log_setup() const override {
    const auto& c = o_.model;
    log_info("model: GPT L%d d%d h%d vocab %d (padded %d) context %d, %s: %.2fM parameters (%.2fM for FLOPs)",
             c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.padded_vocab(), c.context, c.arch_name().c_str(),
             model_.n_params() / 1e6,
             model_.n_flop_params() / 1e6);
    log_info("data: %llu train tokens (%llu windows of %d), %llu val tokens; batch %d x seq %d x accum %d x dp %d",
             static_cast<unsigned long long>(train_stream_->n_tokens()),
             static_cast<unsigned long long>(train_loader_.n_samples()), T_,
             static_cast<unsigned long long>(val_stream_->n_tokens()), B_, T_, o_.train.grad_accum,
             grid_.dp_size());
  }

  nlohmann::json config_json() const override {
    const auto& c = o_.model;
    return {{"model", {{"n_layer", c.n_layer}, {"n_embd", c.n_embd}, {"n_head", c.n_head},
                       {"vocab_size", c.vocab_size}, {"context", c.context}, {"arch", models::gpt_arch_to_json(c)}}},
            {"tokenizer", fs::absolute(o_.tokenizer_path).string()},
            {"tokenizer_hash", tok_.hash()},
            {"data", fs::absolute(o_.data_dir).string()},
            {"batch", B_},
            {"seq_len", T_},
            {"eval_batches", o_.eval_batches},
            {"sample", {{"tokens", o_.sample_tokens}, {"temperature", json_float(o_.sample_temperature)},
                        {"top_k", o_.sample_top_k}}}};
  }

 private:
  const PretrainOptions& o_;
  const data::Tokenizer& tok_;
  dist::ParallelGrid& grid_;
  const int B_, T_;
  std::shared_ptr<const data::TokenStream> train_stream_, val_stream_;
  data::DataLoader train_loader_, val_loader_;
  models::Gpt model_;
  std::vector<int32_t> x_, y_;
};

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
  CHORUS_CHECK(opt.batch >= 1, "batch: must be >= 1, got %d", opt.batch);
  CHORUS_CHECK(opt.seq_len >= 1, "seq-len: must be >= 1, got %d", opt.seq_len);
  CHORUS_CHECK(opt.seq_len <= opt.model.context, "seq-len: %d exceeds the model context %d", opt.seq_len,
               opt.model.context);
  CHORUS_CHECK(opt.eval_batches >= 1, "eval-batches: must be >= 1, got %d", opt.eval_batches);
  opt.train.validate();

  dist::ParallelGrid single = dist::ParallelGrid::single();
  dist::ParallelGrid& grid = opt.train.grid ? *opt.train.grid : single;
  opt.train.grid = &grid;
  grid.check_divides(opt.model.n_head, opt.model.mlp_hidden(), opt.model.padded_vocab());
  check_plan_fits(plan_pretrain(opt, {grid.dp_size(), grid.tp_size(), opt.train.zero_stage, opt.train.precision}),
                  opt.train.max_memory_gib, grid.world(), "pretrain",
                  "--batch, --seq-len, --n-embd or --n-layer, or use --tp / --zero 1 over more ranks");
  const RunDirLock lock(opt.train);  // held until the final weights are written
  GptPretrainTask task(opt, tokenizer, grid);

  PretrainResult result;
  static_cast<TrainResult&>(result) = run_training(task, opt.train);
  if (!result.last_eval.is_null()) {
    result.val_loss = result.last_eval.at("val_loss").get<float>();
    result.val_bpb = result.last_eval.at("val_bpb").get<float>();
  }
  if (result.stopped) return result;

  result.weights_path = (fs::path(opt.train.run_dir) / "model.h5").string();
  checkpoint::save_weights(result.weights_path, task.model(), tokenizer.hash(), grid);
  log_info("saved %s", result.weights_path.c_str());

  if (opt.sample_tokens > 0 && grid.tp_size() == 1 && grid.world_rank() == 0) {
    GenerateOptions g;
    g.max_new_tokens = opt.sample_tokens;
    g.temperature = opt.sample_temperature;
    g.top_k = opt.sample_top_k;
    g.seed = opt.train.seed;
    // Sample across document boundaries (a young model often ends a document
    // at once): <|endoftext|> is shown as a line break instead of stopping.
    auto ids = generate(task.model(), {tokenizer.eot()}, g, /*stop_token=*/UINT32_MAX);
    for (uint32_t id : ids) result.sample += id == tokenizer.eot() ? std::string("\n") : tokenizer.token_bytes(id);
  }
  return result;
}

}  // namespace chorus::train
