// Command-line + .ini option handling for every chorus subcommand.
//
// Each option belongs to a section ("model", "data", "train", ...). On the
// command line it is a flat long flag (--n-layer 6); in a config file it sits
// under its section:
//     [model]
//     n-layer = 6
// Precedence: flag > config file > built-in default. Unknown keys, keys in the
// wrong section and unparsable values are refused with the file and key named.
#pragma once

#include <boost/program_options.hpp>
#include <map>
#include <string>
#include <vector>

#include "nn/matmul.h"

namespace chorus::apps {

namespace po = boost::program_options;

class OptionSet {
 public:
  OptionSet(std::string command, std::string summary);

  // An option with a default shown in --help.
  template <class T>
  void add(const std::string& section, const std::string& name, const T& def, const std::string& help) {
    group(section).add_options()(name.c_str(), po::value<T>()->default_value(def), help.c_str());
    file_.add_options()((section + "." + name).c_str(), po::value<T>(), help.c_str());
  }
  // An option with a default displayed as `shown` (e.g. for floats).
  template <class T>
  void add(const std::string& section, const std::string& name, const T& def, const std::string& shown,
           const std::string& help) {
    group(section).add_options()(name.c_str(), po::value<T>()->default_value(def, shown), help.c_str());
    file_.add_options()((section + "." + name).c_str(), po::value<T>(), help.c_str());
  }
  // An option without a default (absent unless given).
  template <class T>
  void add_optional(const std::string& section, const std::string& name, const std::string& help) {
    group(section).add_options()(name.c_str(), po::value<T>(), help.c_str());
    file_.add_options()((section + "." + name).c_str(), po::value<T>(), help.c_str());
  }
  // A list option (repeatable flag, or several positional arguments).
  void add_list(const std::string& section, const std::string& name, const std::string& help);
  // A boolean switch (--name), also settable in a file as name = true/false.
  void add_switch(const std::string& section, const std::string& name, const std::string& help);
  // Positional arguments fill `name` (max_count -1 = any number).
  void positional(const std::string& name, int max_count);
  // Adds --config FILE (a .ini file of the sections above).
  void allow_config() { allow_config_ = true; }

  // Parses argv (after the subcommand name). Returns false when --help was
  // given (help already printed). Throws chorus::Error on any problem.
  bool parse(int argc, char** argv, po::variables_map& vm);
  std::string help() const;

 private:
  po::options_description& group(const std::string& section);
  std::string command_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, po::options_description> groups_;
  po::options_description file_;
  po::positional_options_description positional_;
  bool allow_config_ = false;
};

// Expands inputs: a directory becomes its *.txt files (sorted); a file stays.
// Throws naming a path that does not exist.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs, const std::string& flag);

// Refuses, naming the flag and the path, an input that is missing, a
// directory or not readable where a file (`what`, e.g. "a tokenizer JSON
// file") is expected.
void check_input_file(const std::string& path, const std::string& flag, const std::string& what);

// Refuses to write `out` (given by --flag) over what the command reads:
// `out` may not be, contain or lie inside any of `inputs` (compared as
// canonical paths, symbolic links resolved). Every command that writes calls
// it before doing any work.
void check_not_input(const std::string& out, const std::string& flag, const std::vector<std::string>& inputs);
// Refuses an output file `out` that already exists unless `force` (--force).
void check_new_file(const std::string& out, const std::string& flag, bool force);

// The tokenizer path a run recorded in <run_dir>/config.json, "" when that file
// is missing or unreadable or has no string field "tokenizer".
std::string recorded_tokenizer(const std::string& run_dir);

// --int8 / --bf16 (decoding on packed copies of the decoder's matrices,
// nn::DecodeWeights); `what` names the matrices in the help.
void add_decode_weight_flags(OptionSet& o, const std::string& what);
// The format those flags ask for, given what the loaded file already is
// (`file_quantization`: its weights header's "quantization", "" for a plain
// file or a checkpoint): an int8-quantised file decodes on int8. Refuses
// --int8 with --bf16, and --bf16 on an int8 file, naming `file`.
nn::DecodeWeights decode_weights_from(const po::variables_map& vm, const std::string& file_quantization,
                                      const std::string& file);

}  // namespace chorus::apps
