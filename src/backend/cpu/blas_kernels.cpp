#include "backend/cpu/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <strings.h>

namespace chorus::backend::cpu {

namespace {

std::set<std::string> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}

}  // namespace

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? name : "";
}

std::string blas_core_override() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return "";
  if (strcasecmp(blas_core_name().c_str(), "prescott") != 0) return "";  // OpenBLAS knew the CPU
  const auto f = cpu_flags();
  auto has = [&](const char* x) { return f.count(x) != 0; };
  if (has("avx512f") && has("avx512bw") && has("avx512dq") && has("avx512vl")) return "SkylakeX";
  if (has("avx2") && has("fma")) return "Haswell";
  return "";
}

void ensure_blas_kernels(char** argv) {
  if (std::getenv("CHORUS_BLAS_REEXEC") != nullptr) return;
  const std::string core = blas_core_override();
  if (core.empty()) return;
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  setenv("CHORUS_BLAS_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "chorus: warning: could not re-execute with OPENBLAS_CORETYPE=%s; OpenBLAS keeps its generic "
                       "kernels (set OPENBLAS_CORETYPE=%s yourself)\n",
               core.c_str(), core.c_str());
}

}  // namespace chorus::backend::cpu
