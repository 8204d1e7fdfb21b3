// libFuzzer target: the command-line and .ini option parser (apps/options.h)
// with an option set shaped like the real commands' (ints, floats, 64-bit
// integers, strings, a switch, a repeatable list, positional arguments,
// --config). Input: one argument per line; a line "%%" ends the arguments and
// the rest of the input is the .ini file passed as --config. A parse either
// throws chorus::Error or gives values that every typed read accepts.
#include <string>
#include <vector>

#include "apps/options.h"
#include "fuzz_common.h"

using namespace chorus;

namespace {

apps::OptionSet make_options() {
  apps::OptionSet o("fuzz", "an option set like the commands'");
  o.add<int>("model", "n-layer", 6, "blocks");
  o.add<int>("model", "n-embd", 384, "width");
  o.add<std::string>("data", "tokenizer", "tokenizer.json", "tokenizer JSON");
  o.add<float>("train", "lr", 6e-4f, "6e-4", "learning rate");
  o.add<int64_t>("train", "steps", 1000, "optimizer steps");
  o.add<uint64_t>("train", "seed", 1, "seed");
  o.add<double>("train", "val-fraction", 0.05, "0.05", "validation fraction");
  o.add_optional<std::string>("train", "resume", "checkpoint to resume");
  o.add_switch("train", "force", "replace outputs");
  o.add_list("data", "inputs", "input files");
  o.positional("inputs", -1);
  o.allow_config();
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args = {"chorus-fuzz"};
  size_t pos = 0;
  bool have_ini = false;
  while (pos <= in.size()) {
    size_t end = in.find('\n', pos);
    if (end == std::string::npos) end = in.size();
    std::string line = in.substr(pos, end - pos);
    pos = end + 1;
    if (line == "%%") {
      have_ini = true;
      break;
    }
    if (!line.empty() || end < in.size()) args.push_back(std::move(line));
  }
  if (have_ini) {
    const std::string ini = pos < in.size() ? in.substr(pos) : std::string();
    args.push_back("--config");
    args.push_back(
        fuzz::write_scratch("options.ini", reinterpret_cast<const uint8_t*>(ini.data()), ini.size()));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  apps::OptionSet o = make_options();
  apps::po::variables_map vm;
  bool ran = false;
  // --help prints the help and returns false; that output is not of interest.
  if (!fuzz::accepts([&] { ran = o.parse(static_cast<int>(args.size()), argv.data(), vm); }) || !ran)
    return 0;
  // Every typed read of an accepted parse must succeed.
  (void)vm["n-layer"].as<int>();
  (void)vm["n-embd"].as<int>();
  (void)vm["tokenizer"].as<std::string>();
  (void)vm["lr"].as<float>();
  (void)vm["steps"].as<int64_t>();
  (void)vm["seed"].as<uint64_t>();
  (void)vm["val-fraction"].as<double>();
  (void)vm["force"].as<bool>();
  if (vm.count("resume")) (void)vm["resume"].as<std::string>();
  if (vm.count("inputs")) (void)vm["inputs"].as<std::vector<std::string>>();
  return 0;
}
