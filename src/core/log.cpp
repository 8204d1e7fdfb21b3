#include "core/log.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace chorus {

static int g_rank = 0;
static int g_world = 1;

void set_log_rank(int rank, int world_size) {
  g_rank = rank;
  g_world = world_size;
}

int log_rank() { return g_rank; }

namespace {

// A log line that could not be written (stdout or stderr on a full disk) must
// not go unnoticed: the job stops with an error naming the stream.
void check_written(std::FILE* f, const char* name, bool ok) {
  ok = std::fflush(f) == 0 && ok && !std::ferror(f);
  if (ok) return;
  const int err = errno;
  std::clearerr(f);
  throw Error(strfmt("log: writing to %s failed: %s", name, std::strerror(err)));
}

}  // namespace

void log_info(const char* fmt, ...) {
  if (g_rank != 0) return;
  va_list ap;
  va_start(ap, fmt);
  bool ok = std::vfprintf(stdout, fmt, ap) >= 0;
  va_end(ap);
  ok = std::fputc('\n', stdout) != EOF && ok;
  check_written(stdout, "stdout", ok);
}

void log_warn(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  bool ok = g_world <= 1 || std::fprintf(stderr, "[rank %d] ", g_rank) >= 0;
  ok = std::fprintf(stderr, "warning: ") >= 0 && ok;
  ok = std::vfprintf(stderr, fmt, ap) >= 0 && ok;
  va_end(ap);
  ok = std::fputc('\n', stderr) != EOF && ok;
  check_written(stderr, "stderr", ok);
}

}  // namespace chorus
