#include "backend/cpu/peak_flops.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace chorus::backend::cpu {

double measure_sgemm_gflops() {
  const int n = 2048;  // 17 GFLOP per call: long enough to time, short enough for start-up
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size(), 0.0f);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(),
                n);
  };
  run();  // warm-up: thread pool start, page faults
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * static_cast<double>(n) / s / 1e9);
  }
  return best;
}

}  // namespace chorus::backend::cpu
