// Making OpenBLAS use the CPU's vector units.
//
// Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels when the
// library loads. On CPUs newer than it knows (seen 2026-12-02: a Sapphire
// Rapids class Xeon with AMX and AVX512-FP16) its detection falls back to the
// generic "Prescott" SSE3 kernels: every fp32 GEMM ran 3-4x slower (gpt-mini
// ~470 tokens/s instead of ~1,700). The choice can only be made through the
// OPENBLAS_CORETYPE environment variable, read at load time, so the process
// re-executes itself once with the best core its features support
// (SkylakeX for AVX-512 F/BW/DQ/VL, Haswell for AVX2).
#pragma once

#include <string>

namespace chorus::backend::cpu {

// The OpenBLAS core in use (e.g. "SkylakeX", "Haswell", "Prescott").
std::string blas_core_name();
// The core OpenBLAS should use on this CPU, or "" when its own choice stands
// (it picked a specific core, or OPENBLAS_CORETYPE is set).
std::string blas_core_override();
// Call first in main(), before MPI or threads start: if blas_core_override()
// names a core, sets OPENBLAS_CORETYPE and re-executes /proc/self/exe with
// argv (once: CHORUS_BLAS_REEXEC guards against a loop). Returns only if no
// re-execution was needed or it failed (then OpenBLAS's own choice stays).
void ensure_blas_kernels(char** argv);

}  // namespace chorus::backend::cpu
