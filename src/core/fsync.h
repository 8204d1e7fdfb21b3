// Making written files durable (the shard writers' commit: write a .tmp file,
// fsync it, rename it, fsync the directory).
#pragma once

#include <string>

namespace chorus {

// fsync(2) of a regular file; throws chorus::Error naming it on failure.
void fsync_file(const std::string& path);
// Best effort: makes a rename in `dir` durable ("" = the current directory).
// Some file systems refuse fsync on a directory; that is not an error worth
// failing a job for.
void fsync_dir(const std::string& dir);

}  // namespace chorus
