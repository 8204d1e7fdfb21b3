// The run directory of a training job (docs/RELIABILITY.md): one run at a
// time holds it, what the run needs of it is checked before anything is
// written, and what is written there is complete or reported.
//
// Order of a run (train/pretrain.cpp, train/finetune_speech.cpp, loop.cpp):
// flags -> RunDirLock -> tokenizer, shards, model -> resume target ->
// check_save_room -> config.json (write_run_config) -> metrics.jsonl.
// A run refused at any point before config.json leaves the directory as it was
// (a directory it had to create is removed again when nothing was put in it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "dist/grid.h"
#include "models/gpt/gpt.h"

namespace chorus::train {

struct TrainOptions;
class TrainTask;

// Rank 0's exclusive hold on one directory: an advisory flock(2) on
// <dir>/.lock, a file that records the holder ({"host", "pid", "since",
// "command", "chorus"}). Released (the file removed) when destroyed. Another
// process asking for a held lock is refused naming the holder. A lock file
// whose flock nobody holds was left by a run that ended without releasing it
// (SIGKILL, a crash, an aborted MPI job: the kernel drops the flock with the
// process); it is named in a warning and taken over.
class DirLock {
 public:
  // Collective over world (every rank calls it): rank 0 creates dir if
  // missing and takes the lock; when refused every rank throws the same
  // chorus::Error. flag: the option the directory comes from ("run-dir").
  DirLock(const std::string& dir, const char* flag, dist::Communicator& world);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

  static constexpr const char* kFileName = ".lock";

 private:
  void release();
  int fd_ = -1;                         // rank 0 only
  std::string path_;                    // rank 0 only
  std::vector<std::filesystem::path> created_;  // the folders it created, leaf first
};

// The locks of one training run: its run directory and, when checkpoints go
// to another one (--save-dir), that one too. Collective over opt.grid's world.
class RunDirLock {
 public:
  explicit RunDirLock(const TrainOptions& opt);

 private:
  std::unique_ptr<DirLock> run_, save_;
};

// Bytes of one checkpoint of a model whose parameter table is `table` (the
// global tensors: fp32 masters and AdamW's two fp32 moments, in all ranks'
// files together) plus a margin for the HDF5 and manifest overhead.
uint64_t checkpoint_bytes_estimate(const std::vector<models::ParamSpec>& table);

// "" when dir (or, before it exists, the nearest folder above it) is writable
// and has need_bytes free (statvfs(3)); else the refusal, naming the flag, the
// path, the bytes needed and free.
std::string save_room_error(const std::string& dir, const char* flag, uint64_t need_bytes);

// Collective over world: rank 0 checks that the save directory is writable
// and holds one more checkpoint (refused on every rank otherwise), and warns
// when it cannot hold all those this invocation keeps (n_saves checkpoints,
// of which keep_last stay).
void check_save_room(const TrainOptions& opt, const std::string& save_dir,
                     const std::vector<models::ParamSpec>& table, int64_t start_step, dist::Communicator& world);

// What every config.json records besides the options: the build (version, git
// revision), the command line, the host, the start time, the Slurm job.
nlohmann::json run_provenance();

// The whole of <run_dir>/config.json: every shared option (opt.to_json()),
// the task's entries, the layout, the checkpoint this invocation resumed
// from ("" = none, at step start_step) and run_provenance().
nlohmann::json run_config(const TrainTask& task, const TrainOptions& opt, const dist::ParallelGrid& grid,
                          const std::string& resumed_from, int64_t start_step);

// Writes <run_dir>/config.json atomically (rank 0; throws naming the file when
// the write fails).
void write_run_config(const std::string& run_dir, const nlohmann::json& config);

}  // namespace chorus::train
