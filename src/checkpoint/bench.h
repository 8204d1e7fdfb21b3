// Checkpoint write / read throughput on a randomly initialised model of any
// size (`chorus checkpoint bench`, driven by bench/checkpoint_bench.sh): no
// tokenizer or data needed. Each round saves the full training state (fp32
// weights + Adam moments) through the same collective save_checkpoint that
// pretraining uses, optionally drops the files from the page cache, loads it
// back through load_checkpoint into separate buffers and checks the result
// bit for bit.
#pragma once

#include <string>
#include <vector>

#include "dist/grid.h"
#include "models/gpt/gpt.h"

namespace chorus::checkpoint {

struct BenchOptions {
  models::GptConfig model;
  std::string dir;  // save directory (checkpoints are step-00000001/, ...)
  int rounds = 3;
  int zero = 0;
  bool cold = true;  // drop the files from the page cache before reading
};

struct BenchRound {
  uint64_t bytes_written = 0, bytes_read = 0;  // over all ranks
  double write_s = 0, read_s = 0;              // wall time of the collective save / load
  double write_mb_s() const { return bytes_written / 1e6 / write_s; }
  double read_mb_s() const { return bytes_read / 1e6 / read_s; }
};

// Collective over the grid. Throws if a load does not give back the saved state.
std::vector<BenchRound> run_bench(dist::ParallelGrid& grid, const BenchOptions& opt);

// Single-core SHA-256 throughput in MB/s over `mb` megabytes (for context).
double sha256_mb_per_s(size_t mb);

}  // namespace chorus::checkpoint
