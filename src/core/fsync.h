// Making written files durable (the shard writers' commit: write a .tmp file,
// fsync it, rename it, fsync the directory; small files such as config.json
// in one call).
#pragma once

#include <string>

namespace chorus {

// fsync(2) of a regular file; throws chorus::Error naming it on failure.
void fsync_file(const std::string& path);
// Best effort: makes a rename in `dir` durable ("" = the current directory).
// Some file systems refuse fsync on a directory; that is not an error worth
// failing a job for.
void fsync_dir(const std::string& dir);
// Replaces path with `bytes` atomically: writes path + ".tmp", fsyncs it,
// renames it over path and fsyncs the directory. A reader sees the old file or
// the new one, never a part; a failed write (a full disk) throws naming the
// file and leaves path as it was.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace chorus
