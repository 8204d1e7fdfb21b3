// chorus pretrain / generate.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/job_flags.h"
#include "apps/memory_check.h"
#include "apps/options.h"
#include "apps/train_flags.h"
#include "backend/cpu/gemm.h"
#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/tokenizer.h"
#include "train/generate.h"
#include "train/pretrain.h"

namespace chorus::apps {

namespace fs = std::filesystem;

void add_pretrain_flags(OptionSet& o) {
  o.add<int>("model", "n-layer", 6, "transformer blocks (L)");
  o.add<int>("model", "n-embd", 384, "model width (d)");
  o.add<int>("model", "n-head", 6, "attention heads (must divide n-embd)");
  o.add<int>("model", "vocab-size", 0, "vocabulary size; 0 = the tokenizer's (a different value is refused)");
  o.add<int>("model", "context", 256, "maximum sequence length (position-embedding rows)");
  add_gpt_arch_flags(o);
  o.add<std::string>("data", "tokenizer", "tokenizer.json", "tokenizer JSON; its hash must match the shards'");
  o.add<std::string>("data", "data", "shards", "directory of train_*.h5 / val_*.h5 shards from prepare-text");
  o.add<int>("data", "seq-len", 256, "tokens per training sequence (T <= context)");
  o.add<int>("train", "batch", 8, "sequences per micro-batch (per data-parallel rank)");
  o.add<int>("train", "eval-batches", 8, "validation micro-batches per evaluation");
  o.add<int>("train", "sample-tokens", 0, "after training, print a sample of this many generated tokens");
  add_train_flags(o, TrainFlagDefaults{});
}

train::PretrainOptions read_pretrain_flags(const po::variables_map& vm) {
  train::PretrainOptions p;
  p.model.n_layer = vm["n-layer"].as<int>();
  p.model.n_embd = vm["n-embd"].as<int>();
  p.model.n_head = vm["n-head"].as<int>();
  p.model.vocab_size = vm["vocab-size"].as<int>();
  p.model.context = vm["context"].as<int>();
  read_gpt_arch_flags(vm, p.model);
  p.tokenizer_path = vm["tokenizer"].as<std::string>();
  p.data_dir = vm["data"].as<std::string>();
  p.seq_len = vm["seq-len"].as<int>();
  p.batch = vm["batch"].as<int>();
  p.eval_batches = vm["eval-batches"].as<int>();
  p.sample_tokens = vm["sample-tokens"].as<int>();
  CHORUS_CHECK(p.model.vocab_size >= 0, "vocab-size: must be >= 0 (0 = the tokenizer's), got %d", p.model.vocab_size);
  CHORUS_CHECK(p.sample_tokens >= 0, "sample-tokens: must be >= 0, got %d", p.sample_tokens);
  p.train = read_train_flags(vm);
  return p;
}

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
              "job exits with code 75 (requeue and run again with --resume auto).\n"
              "CHORUS_FAIL_AT, CHORUS_CKPT_KILL_AT, CHORUS_INJECT_INF, CHORUS_INJECT_NAN_LOSS and\n"
              "CHORUS_STEP_DELAY_MS in the environment inject faults for the tests (docs/RELIABILITY.md):\n"
              "never set them.");
  add_pretrain_flags(o);
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  train::PretrainOptions p = read_pretrain_flags(vm);
  dist::ParallelGrid grid(rt, vm["tp"].as<int>());
  p.train.grid = &grid;
  check_input_file(p.tokenizer_path, "tokenizer", "a tokenizer JSON file");
  CHORUS_CHECK(p.batch >= 1 && p.seq_len >= 1, "batch / seq-len: must be >= 1, got %d / %d", p.batch, p.seq_len);

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
           p.train.loss_scaler.enabled
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
  add_decode_weight_flags(o, "the weight matrices and the LM head");
  o.add<std::string>("sampling", "prompt", "", "text to continue (empty: start from <|endoftext|>)");
  o.add<int>("sampling", "max-new-tokens", 200, "tokens to generate at most");
  o.add<float>("sampling", "temperature", 0.8f, "0.8", "softmax temperature (0 = greedy)");
  o.add<int>("sampling", "top-k", 40, "sample among the k most likely tokens (0 = all)");
  o.add<uint64_t>("sampling", "seed", 1, "sampling seed");
  o.add<int>("system", "threads", 0, "OpenMP threads (0 = all cores)");
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  CHORUS_CHECK(vm["threads"].as<int>() >= 0, "threads: must be >= 0, got %d", vm["threads"].as<int>());
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
  check_input_file(weights, vm["weights"].as<std::string>().empty() ? "run-dir" : "weights", "a weights file (model.h5)");
  check_input_file(tok_path, "tokenizer", "a tokenizer JSON file");
  auto tok = data::Tokenizer::load(tok_path);
  auto header = checkpoint::read_weights_header(weights);
  CHORUS_CHECK(header.model_type == "gpt",
               "weights '%s': attribute 'model_type' is '%s': generate runs a GPT (transcribe / evaluate run a speech "
               "model)",
               weights.c_str(), header.model_type.c_str());
  const auto& hc = header.config;
  const models::GptMemory need = models::gpt_memory(hc, 1, hc.context, 1, Precision::fp32);  // the model below
  check_memory_fits("generate", double(need.master_bytes + need.grad_bytes + need.activation_bytes),
                    strfmt("the model of '%s': L%d d%d vocab %d context %d", weights.c_str(), hc.n_layer, hc.n_embd,
                           hc.vocab_size, hc.context),
                    "the model size (it is the weights file's)");
  models::Gpt model(header.config, 1, header.config.context, nullptr);
  checkpoint::load_weights(weights, model, tok.hash());
  // A quantised file (chorus quantize) decodes on its int8 codes: the loaded
  // weights are their dequantised values, and quantising them again gives the
  // same codes.
  model.set_decode_weights(decode_weights_from(vm, header.quantization, weights));

  train::GenerateOptions g;
  g.max_new_tokens = vm["max-new-tokens"].as<int>();
  g.temperature = vm["temperature"].as<float>();
  g.top_k = vm["top-k"].as<int>();
  g.seed = vm["seed"].as<uint64_t>();
  CHORUS_CHECK(g.max_new_tokens >= 0, "max-new-tokens: must be >= 0");
  CHORUS_CHECK(g.temperature >= 0, "temperature: must be >= 0");
  CHORUS_CHECK(g.top_k >= 0, "top-k: must be >= 0 (0 = all tokens), got %d", g.top_k);
  const std::string prompt = vm["prompt"].as<std::string>();
  std::vector<uint32_t> ids = prompt.empty() ? std::vector<uint32_t>{tok.eot()} : tok.encode(prompt);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  Timer timer;
  size_t n_new = 0;
  train::generate(model, ids, g, tok.eot(), [&](uint32_t id) {
    const std::string& b = tok.token_bytes(id);
    std::fwrite(b.data(), 1, b.size(), stdout);
    std::fflush(stdout);
    ++n_new;
  });
  std::fputc('\n', stdout);
  const double secs = timer.seconds();
  // On stderr: stdout is the text alone, for pipes.
  std::fprintf(stderr, "generated %zu tokens in %.2f s: %.1f tokens/s (%s weights, prompt %zu tokens)\n", n_new, secs,
               double(n_new) / std::max(secs, 1e-9), nn::decode_weights_name(model.decode_weights()), ids.size());
  return 0;
}

}  // namespace chorus::apps
