// The file-system steps of a crash-safe checkpoint commit (write, fsync,
// rename, fsync the directory), file digests, and the fault-injection hook the
// crash tests use. Every failure throws chorus::Error naming the path.
#pragma once

#include <cstdint>
#include <string>

namespace chorus::checkpoint {

// fsync(2) of a file or a directory (a directory fsync makes the names of
// the entries created or renamed in it durable).
void fsync_path(const std::string& path);
// Writes `bytes` to path (truncating) and fsyncs the file (not its directory).
void write_file_durable(const std::string& path, const std::string& bytes);
// Reads a whole (small) file; throws naming it when it cannot be read.
std::string read_small_file(const std::string& path);

struct FileDigest {
  uint64_t bytes = 0;
  std::string sha256;  // 64 lowercase hex characters
};
// Size and SHA-256 of a file, streamed in large blocks.
FileDigest digest_file(const std::string& path);
// Asks the kernel to drop the file's (clean) pages from the page cache, so a
// following read comes from the disk (benchmarks of cold reads).
void drop_from_page_cache(const std::string& path);

// Crash-test hook. With CHORUS_CKPT_KILL_AT="STEP:N" in the environment the
// process kills itself with SIGKILL right after its N-th durable event while
// saving the checkpoint of step STEP. Events, in order, per process: each
// shard file it writes (written, fsynced, hashed); then, on world rank 0 only:
// the manifest, the rename of step-....tmp/ to step-..../, the update of
// `latest`. Does nothing when the variable is unset.
void commit_event(int64_t step, const char* what);

}  // namespace chorus::checkpoint
