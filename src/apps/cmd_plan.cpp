// chorus plan: what a pretrain / finetune-speech job needs per rank, before
// it is queued (train/plan.h, docs/PLAN.md).
#include <omp.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "apps/commands.h"
#include "apps/job_flags.h"
#include "backend/cpu/peak_flops.h"
#include "core/error.h"
#include "core/meminfo.h"
#include "core/strfmt.h"
#include "data/tokenizer.h"
#include "dist/communicator.h"
#include "train/plan.h"

namespace chorus::apps {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSummary =
    "Prints what a training job needs, before it is queued and without reading its data: per rank the\n"
    "parameter (fp32 masters + compute copy), gradient, optimizer (Adam) and activation memory of a layout,\n"
    "the FLOPs of one optimizer step and an estimated step time. It takes the job's own flags and config\n"
    "file, so a job's command line with `plan` in front of it plans that job:\n"
    "  chorus plan --config configs/gpt-mini.ini --tp 2 --dp 4             (pretrain, the default job)\n"
    "  chorus plan finetune-speech --config configs/speech-mini.ini --init-decoder runs/gpt/model.h5\n"
    "The sizes come from the models' own sizing code (the numbers `pretrain` prints in its `memory per\n"
    "rank:` line); the step time is FLOPs / (ranks x GFLOP/s per rank x --assume-mfu), with the GFLOP/s\n"
    "from --peak-gflops or, when it is 0, measured with cblas_sgemm as training does (on this machine,\n"
    "with --threads threads: under mpirun each rank gets its share of the cores). Layout: --tp, --zero,\n"
    "--precision as for the job; the data-parallel degree from --dp, or --ranks (DP = ranks / TP).\n"
    "--max-memory GiB: exit with an error (code 1) when a rank needs more; without it the report says how\n"
    "many ranks of this layout fit in this machine's MemAvailable. See docs/PLAN.md.";

}  // namespace

int cmd_plan(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "plan");
  // chorus plan [pretrain | finetune-speech] <that job's flags>
  const bool speech = argc > 1 && std::strcmp(argv[1], "finetune-speech") == 0;
  if (argc > 1 && (speech || std::strcmp(argv[1], "pretrain") == 0)) {
    argv[1] = argv[0];
    --argc;
    ++argv;
  }
  OptionSet o(speech ? "plan finetune-speech" : "plan [pretrain]", kSummary);
  if (speech)
    add_finetune_speech_flags(o);
  else
    add_pretrain_flags(o);
  o.add<int>("plan", "dp", 1, "data-parallel degree of the planned layout (ranks = dp x tp)");
  o.add<int>("plan", "ranks", 0, "ranks of the planned job instead of --dp: DP = ranks / tp (0 = use --dp)");
  o.add<double>("plan", "assume-mfu", 0.5, "0.5",
                "fraction of the GFLOP/s per rank a step reaches (model FLOPs utilisation) for the step time; "
                "the step lines of a real run print the MFU it reaches, in (0, 1]");
  if (speech)
    o.add<double>("plan", "avg-seconds", 0.0, "0",
                  "mean clip length in seconds, for the FLOPs (training uses the train split's mean; 0 = the "
                  "longest clip, --max-frames / 100)");
  o.allow_config();
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;

  train::Layout layout;
  layout.tp = vm["tp"].as<int>();
  CHORUS_CHECK(layout.tp >= 1, "tp: must be >= 1, got %d", layout.tp);
  const int ranks = vm["ranks"].as<int>();
  CHORUS_CHECK(ranks >= 0, "ranks: must be >= 0 (0 = use --dp), got %d", ranks);
  CHORUS_CHECK(ranks % layout.tp == 0, "ranks: %d is not a multiple of --tp %d", ranks, layout.tp);
  layout.dp = ranks > 0 ? ranks / layout.tp : vm["dp"].as<int>();
  CHORUS_CHECK(layout.dp >= 1, "dp: must be >= 1, got %d", layout.dp);
  const double mfu = vm["assume-mfu"].as<double>();
  CHORUS_CHECK(mfu > 0 && mfu <= 1, "assume-mfu: must be in (0, 1], got %g", mfu);

  train::JobPlan plan;
  train::TrainOptions train_opt;
  if (speech) {
    train::FinetuneSpeechOptions p = read_finetune_speech_flags(vm);
    p.encoder.validate();
    CHORUS_CHECK(p.batch >= 1, "batch: must be >= 1, got %d", p.batch);
    models::SpeechSeq2SeqConfig cfg;
    cfg.encoder = p.encoder;
    cfg.decoder = train::decoder_source(
        p, p.init_decoder == "none" ? data::Tokenizer::load(p.tokenizer_path).vocab_size() : 0).config;
    cfg.decoder.validate();
    CHORUS_CHECK(p.max_tokens <= cfg.decoder.context, "max-tokens: %d exceeds the decoder context %d",
                 p.max_tokens, cfg.decoder.context);
    const double avg_seconds = vm["avg-seconds"].as<double>();
    CHORUS_CHECK(avg_seconds >= 0, "avg-seconds: must be >= 0 (0 = the longest clip), got %g", avg_seconds);
    const double avg_frames = avg_seconds > 0 ? std::min<double>(100.0 * avg_seconds, p.encoder.max_frames)
                                              : p.encoder.max_frames;
    train_opt = p.train;
    layout.zero = train_opt.zero_stage;
    layout.precision = train_opt.precision;
    plan = train::plan_finetune_speech(p, cfg, layout, avg_frames);
  } else {
    train::PretrainOptions p = read_pretrain_flags(vm);
    if (p.model.vocab_size == 0) {
      CHORUS_CHECK(fs::is_regular_file(p.tokenizer_path),
                   "vocab-size: 0 means the tokenizer's, but --tokenizer '%s' is not a file (give --vocab-size)",
                   p.tokenizer_path.c_str());
      p.model.vocab_size = data::Tokenizer::load(p.tokenizer_path).vocab_size();
    }
    p.model.validate();
    CHORUS_CHECK(p.batch >= 1, "batch: must be >= 1, got %d", p.batch);
    CHORUS_CHECK(p.seq_len >= 1 && p.seq_len <= p.model.context, "seq-len: must be in [1, context = %d], got %d",
                 p.model.context, p.seq_len);
    train_opt = p.train;
    layout.zero = train_opt.zero_stage;
    layout.precision = train_opt.precision;
    plan = train::plan_pretrain(p, layout);
  }

  const double gflops =
      train_opt.peak_gflops > 0 ? train_opt.peak_gflops : backend::cpu::measure_sgemm_gflops();
  const std::string source = train_opt.peak_gflops > 0
                                 ? std::string("--peak-gflops")
                                 : strfmt("measured sgemm, %d threads", omp_get_max_threads());
  std::printf("%s\n", train::describe_plan(plan, gflops, source, mfu, train_opt.steps).c_str());
  const double need = static_cast<double>(plan.total_bytes());
  if (const uint64_t avail = memory_available(); avail > 0)
    std::printf("this machine: MemAvailable %.1f GiB holds %lld rank%s of this layout\n", avail / double(1 << 30),
                static_cast<long long>(avail / need), avail / need >= 2 ? "s" : "");
  dist::LocalCommunicator self;
  if (train_opt.max_memory_gib > 0)
    train::check_plan_fits(plan, train_opt.max_memory_gib, self, speech ? "finetune-speech" : "pretrain",
                           speech ? "--batch, --max-frames, --max-tokens or the model size, or use --tp / --zero 1"
                                  : "--batch, --seq-len, --n-embd or --n-layer, or use --tp / --zero 1");
  return 0;
}

}  // namespace chorus::apps
