// Helpers for tests that run whole jobs: run a shell command and capture its
// output, the mpirun prefix used for multi-rank jobs, and reading the losses
// a run wrote to metrics.jsonl. Header-only; include as "common/process.h".
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace chorus::testing {

struct Result {
  int code = -1;     // exit code; 128 + signal when killed by a signal
  std::string out;   // stdout and stderr, interleaved
};

// Runs `cmd` with /bin/sh, capturing stdout and stderr.
inline Result sh(const std::string& cmd) {
  Result r;
  FILE* p = popen(("( " + cmd + " ) 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

#ifdef CHORUS_BINARY
// Runs the chorus executable with `args`.
inline Result chorus(const std::string& args) { return sh(std::string(CHORUS_BINARY) + " " + args); }
#endif

#ifdef CHORUS_MPIRUN
// "mpirun ... -np N " for a bounded multi-rank job on this machine (root,
// more ranks than cores, one OpenMP thread per rank).
inline std::string mpirun(int np) {
  return std::string(CHORUS_MPIRUN) + " --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -np " +
         std::to_string(np) + " ";
}
#endif

#if defined(CHORUS_SOURCE_DIR) && defined(CHORUS_BINARY)
// A small corpus for whole-job tests in dir: the shipped text of `langs`
// copied to dir/text, a tokenizer of `vocab` tokens dir/tok.json and shards
// dir/shards. Returns "" on success, else the failing command and its output.
inline std::string make_corpus(const std::filesystem::path& dir, std::initializer_list<const char*> langs,
                               int vocab) {
  std::filesystem::create_directories(dir / "text");
  const std::string src = std::string(CHORUS_SOURCE_DIR) + "/datasets/text/";
  for (const char* lang : langs)
    std::filesystem::copy_file(src + lang + ".txt", dir / "text" / (std::string(lang) + ".txt"));
  const std::string bin = CHORUS_BINARY, text = (dir / "text").string(), tok = (dir / "tok.json").string();
  for (const std::string& cmd :
       {bin + " train-tokenizer --quiet --input " + text + " --vocab " + std::to_string(vocab) + " --out " + tok,
        bin + " prepare-text --quiet --tokenizer " + tok + " --input " + text + " --out " + (dir / "shards").string()}) {
    const Result r = sh(cmd);
    if (r.code != 0) return cmd + "\n" + r.out;
  }
  return "";
}
#endif

// Column `key` of every row of <run_dir>/metrics.jsonl (NaN where it is null
// or missing, 1 / 0 for booleans).
inline std::vector<double> metric(const std::string& run_dir, const std::string& key) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<double> out;
  for (std::string line; std::getline(in, line);) {
    const auto v = nlohmann::json::parse(line)[key];
    out.push_back(v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.is_number() ? v.get<double>() : std::nan(""));
  }
  return out;
}

// The "loss" of every row of <run_dir>/metrics.jsonl.
inline std::vector<double> losses(const std::string& run_dir) { return metric(run_dir, "loss"); }

// Column `key` of two runs' metrics.jsonl, into *a and *b, for comparing them
// row by row. Succeeds only when each run logged exactly `rows` rows, so two
// missing, empty or equally cut-short files never compare equal:
//   ASSERT_TRUE(rows_to_compare(ref, run, "loss", 6, &a, &b));
inline ::testing::AssertionResult rows_to_compare(const std::string& run_a, const std::string& run_b,
                                                  const std::string& key, size_t rows, std::vector<double>* a,
                                                  std::vector<double>* b) {
  *a = metric(run_a, key);
  *b = metric(run_b, key);
  if (a->size() == rows && b->size() == rows) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "'" << key << "' rows to compare: expected " << rows << " in each run, got " << a->size()
         << " in " << run_a << "/metrics.jsonl and " << b->size() << " in " << run_b << "/metrics.jsonl";
}

}  // namespace chorus::testing
