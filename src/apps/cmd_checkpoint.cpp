// chorus checkpoint inspect | verify | hash | reshard | export | bench.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/options.h"
#include "checkpoint/bench.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/tools.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/hf_tokenizer.h"

namespace chorus::apps {

namespace {

void usage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: chorus checkpoint <action> [options]   (chorus checkpoint <action> --help)\n\n"
      "Tools for sharded checkpoints (<save-dir>/step-NNNNNNNN/ with manifest.json; a save directory\n"
      "stands for the checkpoint its `latest` names). See docs/CHECKPOINTS.md.\n\n"
      "actions:\n"
      "  inspect DIR                 layout, step, files, tensors and sizes\n"
      "  verify DIR                  every file's size and SHA-256, every tensor's shape and slice\n"
      "                              and that every value is finite;\n"
      "                              exit 1 naming each bad file\n"
      "  hash DIR|FILE               one digest of the global parameters, the same under any layout\n"
      "                              (also of a weights file exported from it)\n"
      "  reshard DIR --out NEW [--tp T] [--dp D] [--zero Z]\n"
      "                              rewrite for another parallel layout\n"
      "  export DIR --out PATH [--format chorus|safetensors]\n"
      "                              consolidated weights: a chorus weights file (generate --weights,\n"
      "                              the speech fine-tune) or a GPT-2 safetensors directory + config.json\n"
      "  bench --dir D [model options]\n"
      "                              write / read throughput of a random model's checkpoint (mpirun-able)\n");
}

void threads_option(OptionSet& o) { o.add<int>("system", "threads", 0, "OpenMP threads (0 = all cores)"); }

void apply_threads(const po::variables_map& vm) {
  const int t = vm["threads"].as<int>();
  CHORUS_CHECK(t >= 0, "threads: must be >= 0, got %d", t);
  if (t > 0) omp_set_num_threads(t);
}

std::string dir_arg(const po::variables_map& vm, const char* action) {
  CHORUS_CHECK(vm.count("dir"), "checkpoint %s: give the checkpoint directory (chorus checkpoint %s DIR)",
               action, action);
  return vm["dir"].as<std::string>();
}

int inspect_cmd(int argc, char** argv) {
  OptionSet o("checkpoint inspect",
              "Prints a checkpoint's step, model, layout, files and (with --tensors) tensors.");
  o.add<std::string>("input", "dir", "", "checkpoint directory or save directory (positional)");
  o.add_switch("input", "tensors", "list every tensor with its global shape, split and local shape");
  o.positional("dir", 1);
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  std::fputs(checkpoint::inspect(dir_arg(vm, "inspect"), vm["tensors"].as<bool>()).c_str(), stdout);
  return 0;
}

int verify_cmd(int argc, char** argv) {
  OptionSet o(
      "checkpoint verify",
      "Checks the manifest, every file's size and SHA-256, every tensor's shape and slice, and that\n"
      "every parameter and Adam moment is finite. Exits 1, naming each bad file (and tensor), on any\n"
      "problem.");
  o.add<std::string>("input", "dir", "", "checkpoint directory or save directory (positional)");
  threads_option(o);
  o.positional("dir", 1);
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  apply_threads(vm);
  const std::string path = dir_arg(vm, "verify");
  std::string dir = path;
  Timer t;
  const auto problems = checkpoint::verify(path, &dir);
  if (!problems.empty()) {
    std::string msg = strfmt("verify: %s: %zu problem(s):", dir.c_str(), problems.size());
    for (const auto& p : problems) msg += "\n  " + p;
    throw Error(msg);
  }
  const auto m = checkpoint::read_manifest(dir + "/manifest.json");
  std::printf(
      "OK %s: step %lld, %zu files, %.1f MB: sizes, SHA-256 digests, shapes and slices all match, every value finite (%.1f s)\n",
      dir.c_str(), static_cast<long long>(m.step), m.files.size(), m.total_bytes() / 1e6, t.seconds());
  return 0;
}

int hash_cmd(int argc, char** argv) {
  OptionSet o(
      "checkpoint hash",
      "Prints one SHA-256 of the global model parameters (tensors in name order, with names and shapes),\n"
      "identical for the same model saved under any TP / DP / ZeRO layout, and for a weights file\n"
      "exported from it.");
  o.add<std::string>("input", "dir", "", "checkpoint directory, save directory or weights file (positional)");
  o.add_switch("input", "with-optimizer", "include the Adam moments (exp_avg, exp_avg_sq) in the digest");
  o.add<std::string>("input", "prefix", "",
                     "digest only the tensors whose names start with this, named without it (e.g. 'decoder.' of a "
                     "speech model against its GPT)");
  threads_option(o);
  o.positional("dir", 1);
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  apply_threads(vm);
  const std::string path = dir_arg(vm, "hash");
  std::printf("%s  %s\n",
              checkpoint::hash(path, vm["with-optimizer"].as<bool>(), vm["prefix"].as<std::string>()).c_str(),
              path.c_str());
  return 0;
}

int reshard_cmd(int argc, char** argv) {
  OptionSet o(
      "checkpoint reshard",
      "Rewrites a checkpoint for another parallel layout (TP degree, DP degree, ZeRO stage) into a new\n"
      "checkpoint directory. A run with that layout resumes from it exactly as from the original (a run\n"
      "can also load the original directly: resharding happens at start-up too).");
  o.add<std::string>("input", "dir", "", "source checkpoint or save directory (positional)");
  o.add<std::string>("output", "out", "", "new checkpoint directory (must not exist)");
  o.add<int>("layout", "tp", 0, "target tensor-parallel degree (0 = the source's)");
  o.add<int>("layout", "dp", 0, "target data-parallel degree (0 = the source's)");
  o.add<int>("layout", "zero", -1, "target ZeRO stage 0 or 1 (-1 = the source's)");
  threads_option(o);
  o.positional("dir", 1);
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  apply_threads(vm);
  const std::string src = dir_arg(vm, "reshard");
  const std::string out = vm["out"].as<std::string>();
  CHORUS_CHECK(!out.empty(), "out: give --out NEW_DIR");
  CHORUS_CHECK(vm["tp"].as<int>() >= 0 && vm["dp"].as<int>() >= 0,
               "tp / dp: must be >= 1, or 0 for the source's, got %d / %d", vm["tp"].as<int>(), vm["dp"].as<int>());
  CHORUS_CHECK(vm["zero"].as<int>() >= -1 && vm["zero"].as<int>() <= 1,
               "zero: must be 0 or 1, or -1 for the source's, got %d", vm["zero"].as<int>());
  const auto m = checkpoint::read_manifest(checkpoint::resolve_checkpoint_dir(src) + "/manifest.json");
  checkpoint::Layout target = m.layout;
  if (vm["tp"].as<int>() != 0) target.tp = vm["tp"].as<int>();
  if (vm["dp"].as<int>() != 0) target.dp = vm["dp"].as<int>();
  if (vm["zero"].as<int>() != -1) target.zero = vm["zero"].as<int>();
  Timer t;
  const auto nm = checkpoint::reshard(src, out, target);
  std::printf("resharded %s (%s) -> %s (%s): step %lld, %zu files, %.1f MB in %.1f s%s\n", src.c_str(),
              m.layout.describe().c_str(), out.c_str(), target.describe().c_str(),
              static_cast<long long>(nm.step), nm.files.size(), nm.total_bytes() / 1e6, t.seconds(),
              nm.rng.empty() && !m.rng.empty() ? " (world size changed: RNG states dropped)" : "");
  return 0;
}

// The tokenizer of a safetensors export: --tokenizer, else the one the run
// recorded in config.json beside the checkpoint (<save-dir>/config.json when
// the save directory is the run directory) if it is still there. "" if none.
std::string export_tokenizer_path(const std::string& flag, const std::string& ckpt_dir) {
  if (!flag.empty()) {
    check_input_file(flag, "tokenizer", "a tokenizer JSON file");
    return flag;
  }
  const std::string path = recorded_tokenizer(std::filesystem::path(ckpt_dir).parent_path().string());
  std::error_code ec;
  return !path.empty() && std::filesystem::is_regular_file(path, ec) ? path : "";
}

int export_cmd(int argc, char** argv) {
  OptionSet o(
      "checkpoint export",
      "Writes the consolidated global weights of a checkpoint:\n"
      "  --format chorus       one weights file (chorus generate --weights FILE, the speech fine-tune)\n"
      "  --format safetensors  a directory with model.safetensors (GPT-2 / Hugging Face GPT2Model tensor\n"
      "                        names and layout: Conv1D weights (in, out), wte with the real vocabulary)\n"
      "                        and config.json, and with the run's tokenizer (--tokenizer, else the one in\n"
      "                        the run's config.json) tokenizer.json + tokenizer_config.json in the Hugging\n"
      "                        Face `tokenizers` format, which gives the ids Chorus gives "
      "(docs/RELIABILITY.md)");
  o.add<std::string>("input", "dir", "", "checkpoint or save directory (positional)");
  o.add<std::string>("output", "out", "", "output file (chorus) or directory (safetensors)");
  o.add<std::string>("output", "format", "chorus", "chorus | safetensors");
  o.add<std::string>(
      "input", "tokenizer", "",
      "the run's tokenizer JSON, for --format safetensors (default: the one named in the run's "
      "config.json beside the checkpoint)");
  o.add_switch("output", "force", "replace an existing --out file (chorus) or model.safetensors / config.json in "
                                  "the --out directory (safetensors); refused without it");
  o.add<std::string>("output", "dtype", "fp32",
                     "fp32 | bf16 (safetensors only: the fp32 masters rounded to bf16, half the size; chorus "
                     "weights files always hold fp32, which every --precision loads)");
  threads_option(o);
  o.positional("dir", 1);
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  apply_threads(vm);
  const std::string src = dir_arg(vm, "export"), out = vm["out"].as<std::string>(),
                    format = vm["format"].as<std::string>();
  CHORUS_CHECK(!out.empty(), "out: give --out PATH");
  // Never over the checkpoint it reads (its directory and every file in it).
  check_not_input(out, "out", {checkpoint::resolve_checkpoint_dir(src)});
  const bool force = vm["force"].as<bool>();
  checkpoint::ExportTokenizer tok_files;
  if (format == "safetensors") {
    const std::string dir = checkpoint::resolve_checkpoint_dir(src);
    tok_files.source = export_tokenizer_path(vm["tokenizer"].as<std::string>(), dir);
    if (!tok_files.source.empty()) {
      const data::Tokenizer tok = data::Tokenizer::load(tok_files.source);
      const checkpoint::Manifest m =
          checkpoint::read_manifest((std::filesystem::path(dir) / "manifest.json").string());
      tok_files.hash = tok.hash();
      tok_files.files = {
          {"tokenizer.json", data::huggingface_tokenizer_json(tok)},
          {"tokenizer_config.json", data::huggingface_tokenizer_config_json(tok, m.model.context)}};
    }
    std::vector<std::string> names = {"model.safetensors", "config.json"};
    for (const auto& f : tok_files.files) names.push_back(f.first);
    for (const auto& name : names) {
      const std::string path = (std::filesystem::path(out) / name).string();
      if (!tok_files.source.empty()) check_not_input(path, "out", {tok_files.source});
      check_new_file(path, "out", force);
    }
  } else {
    check_new_file(out, "out", force);
  }
  const Precision dtype = parse_precision(vm["dtype"].as<std::string>(), "dtype");
  CHORUS_CHECK(dtype != Precision::fp16, "dtype: export writes fp32 or bf16, got fp16");
  CHORUS_CHECK(dtype == Precision::fp32 || format == "safetensors",
               "dtype: bf16 is written only with --format safetensors (chorus weights files hold fp32)");
  Timer t;
  if (format == "chorus") {
    checkpoint::export_weights(src, out);
    std::printf("exported %s -> %s (chorus weights, %.1f s)\n", src.c_str(), out.c_str(), t.seconds());
  } else if (format == "safetensors") {
    checkpoint::export_safetensors(src, out, dtype, tok_files.source.empty() ? nullptr : &tok_files);
    std::printf("exported %s -> %s/model.safetensors (%s) + config.json%s (%.1f s)\n", src.c_str(),
                out.c_str(), precision_name(dtype),
                tok_files.source.empty()
                    ? ""
                    : (" + tokenizer.json, tokenizer_config.json of " + tok_files.source).c_str(),
                t.seconds());
    if (tok_files.source.empty())
      log_warn(
          "export: no tokenizer written (no --tokenizer, and no run config.json beside the checkpoint names "
          "one): give --tokenizer to add tokenizer.json");
  } else {
    CHORUS_FAIL("format: expected 'chorus' or 'safetensors', got '%s'", format.c_str());
  }
  return 0;
}

int bench_cmd(int argc, char** argv, dist::Runtime& rt) {
  OptionSet o(
      "checkpoint bench",
      "Measures checkpoint write and read throughput on a randomly initialised GPT of the given size\n"
      "(default: gpt2-124M, vocab 50257; no tokenizer or data needed). Saves and loads the full training\n"
      "state through the same code as pretrain; under mpirun every rank writes its own files.");
  o.add<int>("model", "n-layer", 12, "transformer blocks");
  o.add<int>("model", "n-embd", 768, "model width");
  o.add<int>("model", "n-head", 12, "attention heads");
  o.add<int>("model", "vocab-size", 50257, "vocabulary size");
  o.add<int>("model", "context", 1024, "position-embedding rows");
  o.add<std::string>("bench", "dir", "",
                     "save directory for the benchmark checkpoints (deleted after each round "
                     "but the last)");
  o.add<int>("bench", "rounds", 3, "save + load rounds");
  o.add<int>("parallel", "tp", 1, "tensor-parallel degree");
  o.add<int>("parallel", "zero", 0, "ZeRO stage (0 or 1)");
  o.add_switch("bench", "warm", "read from the page cache (default: drop the files from it first)");
  threads_option(o);
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  apply_threads(vm);
  checkpoint::BenchOptions b;
  b.model.n_layer = vm["n-layer"].as<int>();
  b.model.n_embd = vm["n-embd"].as<int>();
  b.model.n_head = vm["n-head"].as<int>();
  b.model.vocab_size = vm["vocab-size"].as<int>();
  b.model.context = vm["context"].as<int>();
  b.model.validate();
  b.dir = vm["dir"].as<std::string>();
  CHORUS_CHECK(!b.dir.empty(), "dir: give --dir DIR for the benchmark checkpoints");
  b.rounds = vm["rounds"].as<int>();
  b.zero = vm["zero"].as<int>();
  b.cold = !vm["warm"].as<bool>();
  dist::ParallelGrid grid(rt, vm["tp"].as<int>());
  log_info("checkpoint bench: GPT L%d d%d h%d vocab %d context %d, %s; SHA-256 runs at %.0f MB/s on one core",
           b.model.n_layer, b.model.n_embd, b.model.n_head, b.model.vocab_size, b.model.context,
           grid.describe().c_str(), checkpoint::sha256_mb_per_s(64));
  auto rounds = checkpoint::run_bench(grid, b);
  std::vector<double> w, r;
  for (const auto& x : rounds) {
    w.push_back(x.write_mb_s());
    r.push_back(x.read_mb_s());
  }
  std::sort(w.begin(), w.end());
  std::sort(r.begin(), r.end());
  log_info(
      "checkpoint bench: %.1f MB per checkpoint; median write %.0f MB/s, median %s read %.0f MB/s (%d "
      "rounds)",
      rounds.back().bytes_written / 1e6, w[w.size() / 2], b.cold ? "cold" : "warm", r[r.size() / 2],
      b.rounds);
  return 0;
}

}  // namespace

int cmd_checkpoint(int argc, char** argv, dist::Runtime& rt) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string action = argv[1];
  if (action == "bench") return bench_cmd(argc - 1, argv + 1, rt);
  require_single_process(rt, ("checkpoint " + action).c_str());
  if (action == "inspect") return inspect_cmd(argc - 1, argv + 1);
  if (action == "verify") return verify_cmd(argc - 1, argv + 1);
  if (action == "hash") return hash_cmd(argc - 1, argv + 1);
  if (action == "reshard") return reshard_cmd(argc - 1, argv + 1);
  if (action == "export") return export_cmd(argc - 1, argv + 1);
  usage(stderr);
  CHORUS_FAIL("checkpoint: unknown action '%s' (inspect, verify, hash, reshard, export, bench)",
              action.c_str());
}

}  // namespace chorus::apps
