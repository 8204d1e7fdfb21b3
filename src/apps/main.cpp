// chorus: one executable, one subcommand per job (DESIGN.md "Jobs a user runs").
#include <cstdio>
#include <cstring>
#include <exception>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include "apps/commands.h"
#include "backend/cpu/blas_kernels.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/log.h"
#include "core/process_info.h"
#include "core/version.h"
#include "dist/runtime.h"
#include "train/loop.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**, chorus::dist::Runtime&);
  const char* summary;
};

const Command kCommands[] = {
    {"train-tokenizer", chorus::apps::cmd_train_tokenizer, "train a byte-level BPE tokenizer on text files"},
    {"add-language", chorus::apps::cmd_add_language, "give a trained tokenizer a new <|xx|> language token"},
    {"prepare-text", chorus::apps::cmd_prepare_text, "tokenize text files into HDF5 train/val shards"},
    {"prepare-speech", chorus::apps::cmd_prepare_speech, "check and shard a manifest of speech clips"},
    {"pretrain", chorus::apps::cmd_pretrain, "pretrain a GPT on prepared shards"},
    {"generate", chorus::apps::cmd_generate, "sample text from trained GPT weights"},
    {"finetune-speech", chorus::apps::cmd_finetune_speech, "fine-tune the speech recogniser from a pretrained GPT"},
    {"transcribe", chorus::apps::cmd_transcribe, "transcribe WAV files with a speech checkpoint"},
    {"evaluate", chorus::apps::cmd_evaluate, "WER / CER per language of a speech checkpoint on a manifest"},
    {"quantize", chorus::apps::cmd_quantize, "an int8 weights file of a GPT or speech model, for inference"},
    {"checkpoint", chorus::apps::cmd_checkpoint, "inspect, verify, hash, reshard or export a checkpoint"},
    {"plan", chorus::apps::cmd_plan, "memory per rank, FLOPs and step time of a training layout, before it runs"},
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: chorus <command> [options]   (chorus <command> --help for its options)\n"
               "       chorus --version\n\n"
               "Chorus pretrains a GPT on text and fine-tunes it into a multilingual speech recogniser.\n\n"
               "commands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-17s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nexample:\n"
               "  chorus train-tokenizer --input datasets/text --vocab 8192 --out runs/tok.json\n"
               "  chorus prepare-text --tokenizer runs/tok.json --input datasets/text --out runs/shards\n"
               "  chorus pretrain --config configs/gpt-mini.ini --tokenizer runs/tok.json --data runs/shards\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && !std::strcmp(argv[1], "--version")) {
    std::printf("%s\n", chorus::version_line().c_str());
    return 0;
  }
  chorus::backend::cpu::set_flush_denormals(true);  // before any thread exists (backend/cpu/ops.h)
  chorus::record_command_line(argc, argv);
  chorus::backend::cpu::ensure_blas_kernels(argv);  // before MPI and threads: may re-execute
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage(stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    std::unique_ptr<chorus::dist::Runtime> rt;
    try {
      rt = std::make_unique<chorus::dist::Runtime>();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "chorus %s: error: %s\n", c.name, e.what());
      return 1;
    }
    const int rank = rt->world().rank(), world = rt->world().size();
    chorus::set_log_rank(rank, world);
    std::string failure;
    try {
      return c.run(argc - 1, argv + 1, *rt);
    } catch (const chorus::train::TrainingDiverged& e) {
      // Every rank decided this together (after the same step): no rank is left
      // waiting in a collective, so each exits normally with the distinct code.
      if (rank == 0) std::fprintf(stderr, "chorus %s: error: %s\n", c.name, e.what());
      return chorus::train::kExitDiverged;
    } catch (const chorus::AgreedError& e) {
      // Every rank has this error: one report, and each rank ends normally.
      if (rank == 0) std::fprintf(stderr, "chorus %s: error: %s\n", c.name, e.what());
      return 1;
    } catch (const chorus::Error& e) {
      failure = std::string("error: ") + e.what();
      // The source location only on request (core/error.h): no build-machine paths for users.
      const char* debug = std::getenv("CHORUS_DEBUG");
      if (debug && *debug && std::strcmp(debug, "0") != 0 && !e.where().empty()) failure += " [" + e.where() + "]";
    } catch (const std::bad_alloc&) {
      failure = chorus::strfmt(
          "error: out of memory: an allocation failed (std::bad_alloc) in 'chorus %s'; the model, batch or "
          "sequence length is too large for this machine (reduce --batch, --seq-len, --n-embd or --n-layer, or "
          "use more ranks)",
          c.name);
    } catch (const std::exception& e) {
      failure = std::string("unexpected error: ") + e.what();
    }
    if (world > 1) {
      // One failing rank ends the whole job now: the others may be blocked in a
      // collective that will never complete.
      std::fprintf(stderr, "chorus %s: [rank %d of %d] %s\nchorus %s: aborting all %d ranks\n", c.name, rank, world,
                   failure.c_str(), c.name, world);
      std::fflush(stderr);
      rt->abort(1);
    }
    std::fprintf(stderr, "chorus %s: %s\n", c.name, failure.c_str());
    return 1;
  }
  std::fprintf(stderr, "chorus: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
