#include "core/log.h"

#include <cstdarg>
#include <cstdio>

namespace chorus {

static int g_rank = 0;
static int g_world = 1;

void set_log_rank(int rank, int world_size) {
  g_rank = rank;
  g_world = world_size;
}

int log_rank() { return g_rank; }

void log_info(const char* fmt, ...) {
  if (g_rank != 0) return;
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stdout, fmt, ap);
  va_end(ap);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void log_warn(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (g_world > 1) std::fprintf(stderr, "[rank %d] ", g_rank);
  std::fprintf(stderr, "warning: ");
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace chorus
