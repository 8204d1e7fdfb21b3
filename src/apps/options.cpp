#include "apps/options.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace chorus::apps {

namespace fs = std::filesystem;

OptionSet::OptionSet(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

po::options_description& OptionSet::group(const std::string& section) {
  auto it = groups_.find(section);
  if (it == groups_.end()) {
    order_.push_back(section);
    it = groups_.emplace(section, po::options_description("[" + section + "]", 100, 50)).first;
  }
  return it->second;
}

void OptionSet::add_list(const std::string& section, const std::string& name, const std::string& help) {
  group(section).add_options()(name.c_str(), po::value<std::vector<std::string>>()->composing(), help.c_str());
  file_.add_options()((section + "." + name).c_str(), po::value<std::vector<std::string>>()->composing(),
                      help.c_str());
}

void OptionSet::add_switch(const std::string& section, const std::string& name, const std::string& help) {
  group(section).add_options()(name.c_str(), po::bool_switch(), help.c_str());
  file_.add_options()((section + "." + name).c_str(), po::value<bool>(), help.c_str());
}

void OptionSet::positional(const std::string& name, int max_count) { positional_.add(name.c_str(), max_count); }

std::string OptionSet::help() const {
  std::ostringstream os;
  os << "usage: chorus " << command_ << " [options]\n\n" << summary_ << "\n\n";
  po::options_description general("general", 100, 50);
  general.add_options()("help,h", "show this help and exit");
  if (allow_config_)
    general.add_options()("config", po::value<std::string>(),
                          "a .ini file with [section] key = value lines for any option below; flags given on the "
                          "command line override it");
  os << general << "\n";
  for (const auto& s : order_) os << groups_.at(s) << "\n";
  return os.str();
}

namespace {

// Boost.Program_options fills in its error messages by replacing the
// placeholders below until none is left, so an error about a flag, key or
// value that itself contains one never ends (chorus hung; found by
// tests/fuzz/options_fuzz.cpp). Such text is refused before it is parsed.
void check_no_placeholder(const std::string& text, const std::string& where) {
  for (const char* p : {"%option%", "%value%", "%prefix%", "%canonical_option%", "%original_token%"})
    CHORUS_CHECK(text.find(p) == std::string::npos,
                 "%s contains '%s', which the option parser cannot quote in its messages; remove it",
                 where.c_str(), p);
}

}  // namespace

bool OptionSet::parse(int argc, char** argv, po::variables_map& vm) {
  for (int i = 1; i < argc; ++i) check_no_placeholder(argv[i], strfmt("argument %d ('%s')", i, argv[i]));
  po::options_description cli("options");
  cli.add_options()("help,h", "help");
  if (allow_config_) cli.add_options()("config", po::value<std::string>(), "config file");
  for (const auto& s : order_) cli.add(groups_.at(s));
  try {
    auto parsed = po::command_line_parser(argc, argv).options(cli).positional(positional_).run();
    po::store(parsed, vm);
  } catch (const po::error& e) {
    // main prefixes every error line with "chorus <command>:", so the message does not.
    throw Error(strfmt("%s (see chorus %s --help)", e.what(), command_.c_str()));
  }
  if (vm.count("help")) {
    std::cout << help();
    return false;
  }
  if (allow_config_ && vm.count("config")) {
    const std::string path = vm["config"].as<std::string>();
    check_input_file(path, "config", "a .ini file");
    std::ifstream file(path, std::ios::binary);
    CHORUS_CHECK(file.good(), "config: cannot read '%s'", path.c_str());
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    // A UTF-8 byte-order mark (Windows editors write one) is not part of the first key.
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
    check_no_placeholder(text, strfmt("config '%s'", path.c_str()));
    std::istringstream in(text);
    po::parsed_options from_file(&cli);
    try {
      from_file = po::parse_config_file(in, file_, /*allow_unregistered=*/false);
    } catch (const po::error& e) {
      throw Error(strfmt("config '%s': %s (keys must sit under their section; see chorus %s --help)",
                         path.c_str(), e.what(), command_.c_str()));
    }
    // Map "section.key" to the flat flag name and store under the CLI description:
    // values given as flags were stored first, so they win.
    po::parsed_options renamed(&cli);
    for (auto opt : from_file.options) {
      auto dot = opt.string_key.find('.');
      opt.string_key = opt.string_key.substr(dot + 1);
      // bool switches come from files as text; po::bool_switch accepts "true"/"false"/"1"/"0".
      renamed.options.push_back(opt);
    }
    try {
      po::store(renamed, vm);
    } catch (const po::error& e) {
      throw Error(strfmt("config '%s': %s", path.c_str(), e.what()));
    }
  }
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error(e.what());
  }
  return true;
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs, const std::string& flag) {
  std::vector<std::string> out;
  for (const auto& in : inputs) {
    CHORUS_CHECK(fs::exists(in), "%s: '%s' does not exist", flag.c_str(), in.c_str());
    if (fs::is_directory(in)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(in))
        if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      CHORUS_CHECK(!files.empty(), "%s: directory '%s' holds no .txt files", flag.c_str(), in.c_str());
      out.insert(out.end(), files.begin(), files.end());
    } else {
      out.push_back(in);
    }
  }
  CHORUS_CHECK(!out.empty(), "%s: no input files given", flag.c_str());
  return out;
}

void check_input_file(const std::string& path, const std::string& flag, const std::string& what) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  CHORUS_CHECK(fs::exists(st), "%s: '%s' does not exist (expected %s)", flag.c_str(), path.c_str(), what.c_str());
  CHORUS_CHECK(!fs::is_directory(st), "%s: '%s' is a directory, expected %s", flag.c_str(), path.c_str(),
               what.c_str());
  CHORUS_CHECK(std::ifstream(path).good(), "%s: cannot read '%s' (expected %s)", flag.c_str(), path.c_str(),
               what.c_str());
}

namespace {

// True when `inner` is `outer` or lies below it (both canonical).
bool within(const fs::path& inner, const fs::path& outer) {
  auto o = outer.begin(), i = inner.begin();
  for (; o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

}  // namespace

void check_not_input(const std::string& out, const std::string& flag, const std::vector<std::string>& inputs) {
  CHORUS_CHECK(!out.empty(), "%s: give an output path", flag.c_str());
  std::error_code ec;
  const fs::path o = fs::weakly_canonical(fs::absolute(out), ec);
  CHORUS_CHECK(!ec, "%s: cannot resolve '%s': %s", flag.c_str(), out.c_str(), ec.message().c_str());
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    const fs::path i = fs::weakly_canonical(fs::absolute(in), ec);
    if (ec) continue;
    CHORUS_CHECK(!within(o, i) && !within(i, o),
                 "%s: '%s' %s the input '%s': writing there would overwrite what this command reads; choose "
                 "another output path",
                 flag.c_str(), out.c_str(), o == i ? "is" : within(o, i) ? "lies inside" : "contains", in.c_str());
  }
}

void check_new_file(const std::string& out, const std::string& flag, bool force) {
  std::error_code ec;
  const fs::file_status st = fs::status(out, ec);
  CHORUS_CHECK(!fs::is_directory(st), "%s: '%s' is a directory, expected a file path", flag.c_str(), out.c_str());
  CHORUS_CHECK(force || !fs::exists(st), "%s: '%s' already exists; give --force to replace it, or choose another path",
               flag.c_str(), out.c_str());
}

std::string recorded_tokenizer(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / "config.json");
  if (!in) return "";
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("tokenizer") || !j["tokenizer"].is_string()) return "";
  return j["tokenizer"].get<std::string>();
}

void add_decode_weight_flags(OptionSet& o, const std::string& what) {
  o.add_switch("model", "int8",
               "decode on weight-only int8 copies of " + what +
                   " (per output channel; a quarter of fp32's bytes per token)");
  o.add_switch("model", "bf16",
               "decode on weight-only bf16 copies of " + what +
                   " (half of fp32's bytes per token; products and sums stay fp32)");
  o.add_switch("model", "int8-activations",
               "with --int8 (or an int8 weights file): quantise each activation row to int8 as well and sum the "
               "integer products exactly (AVX-512 VNNI where the CPU has it, AVX2 otherwise)");
}

nn::DecodeWeights decode_weights_from(const po::variables_map& vm, const std::string& file_quantization,
                                      const std::string& file) {
  const bool int8 = vm["int8"].as<bool>(), bf16 = vm["bf16"].as<bool>(), act = vm["int8-activations"].as<bool>();
  CHORUS_CHECK(!(int8 && bf16), "--int8 and --bf16: give one decode weight format");
  if (file_quantization == "int8") {
    CHORUS_CHECK(!bf16, "--bf16: '%s' is an int8-quantised weights file (its matrices decode on int8; give the "
                        "fp32 checkpoint for bf16)", file.c_str());
    return act ? nn::DecodeWeights::w8a8 : nn::DecodeWeights::int8;
  }
  CHORUS_CHECK(!act || int8, "--int8-activations: goes with --int8 or an int8 weights file (chorus quantize)");
  if (int8) return act ? nn::DecodeWeights::w8a8 : nn::DecodeWeights::int8;
  return bf16 ? nn::DecodeWeights::bf16 : nn::DecodeWeights::fp32;
}

}  // namespace chorus::apps
