// Measured fp32 GEMM peak of this machine, the denominator of MFU when the
// config gives none (MFU = achieved model FLOP/s / peak FLOP/s).
#pragma once

namespace chorus::backend::cpu {

// Times cblas_sgemm (2048 x 2048 x 2048, best of 5 after a warm-up) on the
// current OpenMP thread count; returns GFLOP/s. Takes about half a second on
// two cores. A busy machine lowers it (and so raises MFU): give --peak-gflops
// for figures meant to be compared.
double measure_sgemm_gflops();

}  // namespace chorus::backend::cpu
