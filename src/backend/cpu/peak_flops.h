// Measured fp32 GEMM peak of this machine, the denominator of MFU when the
// config gives none (MFU = achieved model FLOP/s / peak FLOP/s).
#pragma once

namespace chorus::backend::cpu {

// Times cblas_sgemm at a training-like shape (1024 x 1024 x 1024, a few
// repeats after a warm-up) on the current OpenMP thread count; returns GFLOP/s.
// Takes about a quarter of a second.
double measure_sgemm_gflops();

}  // namespace chorus::backend::cpu
