// chorus quantize: a weight-only int8 weights file of a GPT or a speech model,
// for inference (generate / transcribe / evaluate load it and decode on int8).
// The matrices a decode step multiplies by (models::decode_int8_tensor) are
// stored as int8 codes with one fp32 scale per output row (nn::PackedWeight);
// everything else stays fp32.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/job_flags.h"
#include "apps/options.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strfmt.h"
#include "dist/grid.h"
#include "models/speech/seq2seq.h"
#include "nn/matmul.h"
#include "train/finetune_speech.h"

namespace chorus::apps {

namespace fs = std::filesystem;

namespace {

struct Tensors {
  checkpoint::WeightsHeader header;
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::vector<float>> data;
};

// A GPT weights file (model.h5 or `checkpoint export`), or the model.h5 of a
// pretrain run directory.
Tensors read_gpt(const std::string& path) {
  std::string file = path;
  if (fs::is_directory(path)) file = (fs::path(path) / "model.h5").string();
  CHORUS_CHECK(fs::is_regular_file(file),
               "checkpoint: '%s' is neither a weights file nor a run directory with model.h5 (for a sharded GPT "
               "checkpoint, run `chorus checkpoint export` first)",
               path.c_str());
  Tensors t;
  for (auto& w : checkpoint::read_weights_tensors(file, &t.header)) {
    t.names.push_back(w.name);
    t.shapes.push_back(w.shape);
    t.data.push_back(std::move(w.data));
  }
  CHORUS_CHECK(t.header.quantization.empty(), "checkpoint: '%s' is already quantised (%s)", file.c_str(),
               t.header.quantization.c_str());
  if (fs::is_directory(path)) t.header.tokenizer = recorded_tokenizer(path);  // informational
  return t;
}

// A finetune-speech checkpoint (its consolidated weights, any TP / ZeRO layout).
Tensors read_speech(const std::string& dir, const checkpoint::Manifest& m) {
  const auto cfg = models::SpeechSeq2SeqConfig::from_manifest(m.model, m.model_extra, dir);
  models::SpeechSeq2Seq model(cfg, 1, cfg.encoder.max_frames, cfg.decoder.context, nullptr, Precision::fp32);
  dist::ParallelGrid grid = dist::ParallelGrid::single();
  train::load_speech_weights(grid, dir, model, m.tokenizer_hash);
  Tensors t;
  t.header.config = m.model;
  t.header.tokenizer_hash = m.tokenizer_hash;
  t.header.model_type = "speech";
  t.header.model_extra = m.model_extra;
  if (m.run.contains("tokenizer")) t.header.tokenizer = m.run.at("tokenizer").get<std::string>();
  const auto params = model.params();
  for (const auto& p : model.param_table()) {
    t.names.push_back(p.name);
    t.shapes.push_back(p.shape);
    t.data.emplace_back(params.begin() + p.offset, params.begin() + p.offset + p.numel);
  }
  return t;
}

}  // namespace

int cmd_quantize(int argc, char** argv, dist::Runtime& rt) {
  require_single_process(rt, "quantize");
  OptionSet o("quantize",
              "Writes a weight-only int8 weights file of a trained model for inference: the matrices a decode step\n"
              "multiplies by (attention, MLP, cross-attention q / out, the LM head = token embedding) as int8 codes\n"
              "with one fp32 scale per output row (symmetric, per output channel); the rest fp32. generate --weights\n"
              "and transcribe / evaluate --checkpoint load it and decode on int8 (docs/SPEECH.md, docs/RESULTS.md).");
  o.add<std::string>("model", "checkpoint", "",
                     "a GPT weights file or pretrain run directory (its model.h5), or a finetune-speech run / "
                     "checkpoint directory");
  o.add<std::string>("output", "out", "", "the weights file to write");
  o.add<std::string>("output", "scheme", "int8", "quantisation scheme: int8 (weight-only, per output channel)");
  o.add_switch("output", "force", "replace an existing --out file (refused without it)");
  po::variables_map vm;
  if (!o.parse(argc, argv, vm)) return 0;
  const std::string src = vm["checkpoint"].as<std::string>(), out = vm["out"].as<std::string>();
  CHORUS_CHECK(!src.empty(), "checkpoint: give --checkpoint PATH");
  CHORUS_CHECK(!out.empty(), "out: give --out FILE");
  CHORUS_CHECK(vm["scheme"].as<std::string>() == "int8", "scheme: '%s' is not supported (int8)",
               vm["scheme"].as<std::string>().c_str());
  CHORUS_CHECK(fs::exists(src), "checkpoint: '%s' does not exist", src.c_str());
  check_new_file(out, "out", vm["force"].as<bool>());
  check_not_input(out, "out", {src});

  // A directory with a checkpoint manifest (a run or step directory) is a
  // speech model when the manifest says so; anything else a GPT weights file.
  Tensors t;
  bool speech = false;
  if (fs::is_directory(src) && !fs::exists(fs::path(src) / "model.h5")) {
    const std::string dir = checkpoint::resolve_checkpoint_dir(src);
    const auto m = checkpoint::read_manifest((fs::path(dir) / "manifest.json").string());
    CHORUS_CHECK(m.model_type == "speech",
                 "checkpoint '%s': a GPT checkpoint without model.h5; run `chorus checkpoint export %s --out FILE` "
                 "and quantize that file",
                 dir.c_str(), dir.c_str());
    t = read_speech(dir, m);
    speech = true;
  } else {
    t = read_gpt(src);
  }
  t.header.quantization = "int8";

  std::vector<nn::PackedWeight> q(t.names.size());
  std::vector<checkpoint::WeightsTensorView> views;
  size_t bytes_fp32 = 0, bytes_out = 0, n_int8 = 0;
  for (size_t i = 0; i < t.names.size(); ++i) {
    checkpoint::WeightsTensorView v{t.names[i], t.shapes[i], t.data[i].data()};
    bytes_fp32 += t.data[i].size() * sizeof(float);
    if (models::decode_int8_tensor(t.names[i]) && t.shapes[i].size() == 2) {
      q[i] = nn::quantize_int8(t.data[i].data(), static_cast<int>(t.shapes[i][0]), static_cast<int>(t.shapes[i][1]));
      v.codes = q[i].q.data();
      v.scale = q[i].scale.data();
      bytes_out += q[i].q.size() + q[i].scale.size() * sizeof(float);
      ++n_int8;
    } else {
      bytes_out += t.data[i].size() * sizeof(float);
    }
    views.push_back(v);
  }
  CHORUS_CHECK(n_int8 > 0, "checkpoint '%s': no tensor to quantise (not a Chorus GPT / speech model?)", src.c_str());
  checkpoint::write_weights_file(out, t.header, views);
  log_info("quantised %s (%s): %zu of %zu tensors int8; %.1f MB of weights -> %.1f MB (file %.1f MB) -> %s",
           src.c_str(), speech ? "speech" : "gpt", n_int8, t.names.size(), bytes_fp32 / 1e6, bytes_out / 1e6,
           static_cast<double>(fs::file_size(out)) / 1e6, out.c_str());
  return 0;
}

}  // namespace chorus::apps
