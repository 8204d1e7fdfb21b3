// chorus train-tokenizer / prepare-text.
#include <omp.h>

#include <cstdio>
#include <sstream>

#include "apps/commands.h"
#include "apps/options.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace chorus::apps {

namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Options every text tool shares (threads, quiet, positional inputs, --config);
// parses argv and applies --threads. Returns false when --help was shown.
bool parse_text_tool(OptionSet& o, const char* threads_help, int argc, char** argv, po::variables_map& vm) {
  o.add<int>("system", "threads", 0, threads_help);
  o.add_switch("system", "quiet", "no progress bar");
  o.positional("input", -1);
  o.allow_config();
  if (!o.parse(argc, argv, vm)) return false;
  CHORUS_CHECK(vm.count("input"), "input: no text given (use --input FILE|DIR)");
  const int threads = vm["threads"].as<int>();
  CHORUS_CHECK(threads >= 0, "threads: must be >= 0, got %d", threads);
  if (threads > 0) omp_set_num_threads(threads);
  return true;
}

}  // namespace

void require_single_process(dist::Runtime& rt, const char* command) {
  CHORUS_CHECK(rt.world().size() == 1,
               "%s runs as one process (it uses every core through OpenMP); launch it without mpirun/srun "
               "(got %d ranks)",
               command, rt.world().size());
}

int cmd_train_tokenizer(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "train-tokenizer");
  OptionSet o("train-tokenizer",
              "Trains a byte-level BPE tokenizer (ids 0-255 are bytes, then merges, then the special tokens\n"
              "<|endoftext|> <|startoftranscript|> <|xx|> per language <|transcribe|> <|notimestamps|>).");
  o.add_list("data", "input", "text files or directories of .txt files (repeatable; also positional)");
  o.add<std::string>("data", "out", "tokenizer.json", "where to write the tokenizer JSON");
  o.add<int>("tokenizer", "vocab", 8192, "vocabulary size including the 256 bytes and the special tokens");
  o.add<std::string>("tokenizer", "languages", "",
                     "comma-separated ISO 639-1 codes that get a <|xx|> token (default: the 33 of datasets/text)");
  o.add_switch("data", "force", "replace an existing --out file (refused without it)");
  po::variables_map vm;
  if (!parse_text_tool(o, "OpenMP threads for counting (0 = all cores)", argc, argv, vm)) return 0;
  data::TokenizerTrainOptions opt;
  opt.vocab_size = vm["vocab"].as<int>();
  opt.languages = split_commas(vm["languages"].as<std::string>());
  opt.progress = !vm["quiet"].as<bool>();
  auto files = expand_inputs(vm["input"].as<std::vector<std::string>>(), "input");
  const std::string out = vm["out"].as<std::string>();
  check_not_input(out, "out", files);
  check_new_file(out, "out", vm["force"].as<bool>());
  Timer t;
  auto tok = data::Tokenizer::train(files, opt);
  tok.save(out);
  log_info("trained tokenizer: %d tokens (%zu languages) on %zu files in %.1f s -> %s (hash %.12s)",
           tok.vocab_size(), tok.languages().size(), files.size(), t.seconds(), out.c_str(), tok.hash().c_str());
  return 0;
}

int cmd_add_language(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "add-language");
  OptionSet o("add-language",
              "Writes a tokenizer that is --tokenizer with a <|xx|> token appended for each new language (ids\n"
              "after every existing one, so the old ids keep their meaning). Speech models trained with the old\n"
              "tokenizer continue on the new one: finetune-speech --init-from grows the decoder's embedding by\n"
              "the new rows (docs/SPEECH.md, \"A new language\").");
  o.add<std::string>("data", "tokenizer", "tokenizer.json", "the tokenizer JSON to extend");
  o.add<std::string>("data", "lang", "", "comma-separated ISO 639 codes to add (required)");
  o.add<std::string>("data", "out", "", "where to write the new tokenizer JSON (required)");
  o.add_switch("data", "force", "replace an existing --out file (refused without it)");
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  const std::string in = vm["tokenizer"].as<std::string>(), out = vm["out"].as<std::string>();
  const std::vector<std::string> langs = split_commas(vm["lang"].as<std::string>());
  CHORUS_CHECK(!langs.empty(), "lang: give at least one language code (--lang nl,pl)");
  CHORUS_CHECK(!out.empty(), "out: give the new tokenizer's path (--out tok-nl.json)");
  check_input_file(in, "tokenizer", "a tokenizer JSON file");
  check_not_input(out, "out", {in});
  check_new_file(out, "out", vm["force"].as<bool>());
  data::Tokenizer tok = data::Tokenizer::load(in);
  const std::string old_hash = tok.hash();
  for (const std::string& l : langs) tok = tok.with_language(l);
  tok.save(out);
  std::string ids;
  for (const std::string& l : langs) ids += strfmt("%s<|%s|> = %u", ids.empty() ? "" : ", ", l.c_str(), tok.special("<|" + l + "|>"));
  log_info("%s (hash %.12s) + %s -> %s: %d tokens (hash %.12s)", in.c_str(), old_hash.c_str(), ids.c_str(), out.c_str(),
           tok.vocab_size(), tok.hash().c_str());
  return 0;
}

int cmd_prepare_text(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "prepare-text");
  OptionSet o("prepare-text",
              "Tokenizes text (one document per non-empty line) into HDF5 shards <out>/train_NNNNNN.h5 and\n"
              "<out>/val_NNNNNN.h5 with the tokenizer's hash recorded in every shard.");
  o.add_list("data", "input", "text files or directories of .txt files (repeatable; also positional)");
  o.add<std::string>("data", "tokenizer", "tokenizer.json", "tokenizer JSON from chorus train-tokenizer");
  o.add<std::string>("data", "out", "shards", "output directory for the shards");
  o.add<double>("data", "val-fraction", 0.05, "0.05", "fraction of documents held out for validation");
  o.add<uint64_t>("data", "shard-tokens", 16u << 20, "maximum tokens per shard file");
  o.add<uint64_t>("data", "seed", 1234, "seed of the train/val assignment");
  o.add_switch("data", "force", "replace the train/val shards already in --out (refused without it)");
  po::variables_map vm;
  if (!parse_text_tool(o, "OpenMP threads for tokenizing (0 = all cores)", argc, argv, vm)) return 0;
  const double val_fraction = vm["val-fraction"].as<double>();
  CHORUS_CHECK(val_fraction > 0.0 && val_fraction < 1.0, "val-fraction: must be in (0, 1), got %g", val_fraction);
  const std::string tok_path = vm["tokenizer"].as<std::string>();
  check_input_file(tok_path, "tokenizer", "a tokenizer JSON file");
  data::PrepareTextOptions opt;
  opt.inputs = expand_inputs(vm["input"].as<std::vector<std::string>>(), "input");
  opt.out_dir = vm["out"].as<std::string>();
  std::vector<std::string> read = opt.inputs;
  read.push_back(tok_path);
  check_not_input(opt.out_dir, "out", read);
  opt.replace = vm["force"].as<bool>();
  auto tok = data::Tokenizer::load(tok_path);
  opt.val_fraction = val_fraction;
  opt.shard_tokens = vm["shard-tokens"].as<uint64_t>();
  CHORUS_CHECK(opt.shard_tokens > 0, "shard-tokens: must be > 0");
  opt.seed = vm["seed"].as<uint64_t>();
  opt.progress = !vm["quiet"].as<bool>();
  Timer t;
  auto infos = data::prepare_text(tok, opt);
  uint64_t n_tok[2] = {0, 0}, n_bytes[2] = {0, 0}, n_files[2] = {0, 0};
  for (const auto& s : infos) {
    int i = s.split == "train" ? 0 : 1;
    n_tok[i] += s.n_tokens;
    n_bytes[i] += s.n_bytes;
    n_files[i] += 1;
  }
  log_info("wrote %llu train shards (%llu tokens, %.2f bytes/token) and %llu val shards (%llu tokens) to %s in "
           "%.1f s",
           (unsigned long long)n_files[0], (unsigned long long)n_tok[0],
           n_tok[0] ? double(n_bytes[0]) / double(n_tok[0]) : 0.0, (unsigned long long)n_files[1],
           (unsigned long long)n_tok[1], opt.out_dir.c_str(), t.seconds());
  return 0;
}

}  // namespace chorus::apps
