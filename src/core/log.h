// Rank-aware logging. Rank 0 prints info lines; every rank may print warnings,
// prefixed with its rank. The rank is set once at start-up by the app. A line
// that cannot be written (a full disk under a redirected stdout) throws
// chorus::Error naming the stream.
#pragma once

#include <string>

namespace chorus {

void set_log_rank(int rank, int world_size);
int log_rank();
// printf-style; info is printed by rank 0 only (to stdout).
__attribute__((format(printf, 1, 2))) void log_info(const char* fmt, ...);
// printf-style; printed by every rank to stderr, prefixed "[rank r] warning:".
__attribute__((format(printf, 1, 2))) void log_warn(const char* fmt, ...);

}  // namespace chorus
