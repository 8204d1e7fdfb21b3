#include "backend/cpu/gemm.h"

#include "backend/cpu/blas_kernels.h"

#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>

#include "backend/cpu/ops.h"
#include "core/error.h"

#if CHORUS_DNNL
// Threading (checked with Debian 12's libdnnl2 2.6.3): oneDNN is built with
// DNNL_CPU_RUNTIME=OMP and links the same libgomp.so.1 as our loops and
// libopenblas0-openmp, so all three share one OpenMP thread pool and its team
// size (set_n_threads): a GEMM from the main thread forks one team, never two
// pools side by side (a test program saw OMP_NUM_THREADS threads in all, after
// our loops, sgemm and oneDNN matmuls). Called inside an OpenMP parallel
// region, oneDNN runs on the calling thread alone, as OpenBLAS does (no new
// threads, even with OMP_MAX_ACTIVE_LEVELS=2). oneDNN uses its own GEMM
// kernels: the Debian build links no external BLAS.
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace chorus::backend::cpu {

// ---- CPU features --------------------------------------------------------------

namespace {

CpuFeatures detect_features() {
  CpuFeatures f{};
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid(1, a, b, c, d);
  const bool fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
  uint64_t xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  }
  // The OS must save the wider registers: XMM|YMM, + opmask|ZMM_hi256|Hi16_ZMM,
  // + XTILECFG|XTILEDATA.
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned max_sub7 = a;
  f.avx2 = os_avx && avx && ((b >> 5) & 1);
  f.f16c = os_avx && avx && f16c;
  f.fma = os_avx && avx && fma;
  f.avx512f = os_avx512 && ((b >> 16) & 1);
  f.avx512_vnni = f.avx512f && ((c >> 11) & 1);
  f.avx512_fp16 = f.avx512f && ((d >> 23) & 1);
  const bool amx_tile = os_amx && ((d >> 24) & 1);
  f.amx_bf16 = amx_tile && ((d >> 22) & 1);
  f.amx_int8 = amx_tile && ((d >> 25) & 1);
  if (max_sub7 >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = f.avx512f && ((a >> 5) & 1);
    f.amx_fp16 = amx_tile && ((a >> 21) & 1);
  }
#endif
  return f;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    size_t b = line.find_first_not_of(" \t", colon + 1);
    size_t e = line.find_last_not_of(" \t\r");
    if (b != std::string::npos && e >= b) return line.substr(b, e - b + 1);
  }
  return "unknown CPU";
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect_features();
  return f;
}

std::string cpu_features_string() {
  const CpuFeatures& f = cpu_features();
  std::string flags;
  const std::pair<bool, const char*> named[] = {{f.avx2, "avx2"},
                                                {f.fma, "fma"},
                                                {f.f16c, "f16c"},
                                                {f.avx512f, "avx512f"},
                                                {f.avx512_bf16, "avx512_bf16"},
                                                {f.avx512_fp16, "avx512_fp16"},
                                                {f.avx512_vnni, "avx512_vnni"},
                                                {f.amx_bf16, "amx_bf16"},
                                                {f.amx_fp16, "amx_fp16"},
                                                {f.amx_int8, "amx_int8"}};
  for (const auto& [on, name] : named) {
    if (!on) continue;
    if (!flags.empty()) flags += ' ';
    flags += name;
  }
  return cpu_model_name() + " (" + (flags.empty() ? "no avx2" : flags) + ")";
}

// ---- path selection ----------------------------------------------------------------

const char* gemm_path_name(GemmPath p) {
  switch (p) {
    case GemmPath::automatic:
      return "auto";
    case GemmPath::dnnl:
      return "onednn";
    case GemmPath::sbgemm:
      return "openblas-sbgemm";
    case GemmPath::convert:
      return "convert+sgemm";
  }
  return "?";
}

GemmPath parse_gemm_path(const std::string& s) {
  if (s == "auto" || s == "automatic") return GemmPath::automatic;
  if (s == "onednn" || s == "dnnl") return GemmPath::dnnl;
  if (s == "sbgemm" || s == "openblas-sbgemm") return GemmPath::sbgemm;
  if (s == "convert" || s == "convert+sgemm") return GemmPath::convert;
  throw Error(strfmt("gemm path: expected auto, onednn, sbgemm or convert, got '%s'", s.c_str()));
}

namespace {

std::atomic<bool> g_path_set{false};
std::atomic<GemmPath> g_path{GemmPath::automatic};

GemmPath env_gemm_path() {
  static const GemmPath p = [] {
    const char* s = std::getenv("CHORUS_GEMM");
    if (s == nullptr || *s == '\0') return GemmPath::automatic;
    try {
      return parse_gemm_path(s);
    } catch (const Error& e) {
      throw Error(std::string("environment variable CHORUS_GEMM: ") + e.what());
    }
  }();
  return p;
}

GemmPath forced_path() {
  return g_path_set.load(std::memory_order_acquire) ? g_path.load() : env_gemm_path();
}

// cblas_sbgemm exists only in OpenBLAS builds made with BUILD_BFLOAT16=1
// (Debian 12's 0.3.21 declares it in cblas.h but does not export it), and the
// OpenBLAS loaded at run time may differ from the one built against, so it is
// looked up in the loaded libraries rather than linked.
using SbgemmFn = decltype(&cblas_sbgemm);
SbgemmFn sbgemm_fn() {
  static const SbgemmFn fn = reinterpret_cast<SbgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sbgemm"));
  return fn;
}

bool has_units(GemmPath path, Precision p) {
  const CpuFeatures& f = cpu_features();
  if (path == GemmPath::dnnl) {
    return p == Precision::bf16 ? (f.avx512_bf16 || f.amx_bf16) : (f.avx512_fp16 || f.amx_fp16);
  }
  return p == Precision::bf16 && f.avx512_bf16;  // sbgemm
}

}  // namespace

// ---- oneDNN ------------------------------------------------------------------------

namespace {

#if CHORUS_DNNL

// Thrown when oneDNN has no implementation for a dtype / shape, so automatic
// mode can fall back; a forced path turns it into chorus::Error.
struct DnnlRefused : Error {
  using Error::Error;
};

dnnl::engine& dnnl_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct DnnlKey {
  int dt, M, N, K, lda, ldb, ldc;
  bool trans_a, trans_b;
  uint32_t alpha_bits, beta_bits;  // bits, so that the ordering is total
  auto operator<=>(const DnnlKey&) const = default;
};

struct DnnlPrim {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  size_t scratch_bytes;
  std::string impl;
};

const char* dnnl_dt_name(dnnl::memory::data_type dt) {
  switch (dt) {
    case dnnl::memory::data_type::bf16:
      return "bf16";
    case dnnl::memory::data_type::f16:
      return "f16";
    case dnnl::memory::data_type::f32:
      return "f32";
    default:
      return "?";
  }
}

std::string dnnl_version_string() {
  const dnnl_version_t* v = dnnl_version();
  return strfmt("%d.%d.%d", v->major, v->minor, v->patch);
}

// Primitives by shape: a training step repeats a handful of shapes, so the map
// stays small; it is emptied if it ever grows past kMaxPrims (entries in use
// are kept alive by their shared_ptr).
constexpr size_t kMaxPrims = 512;
std::mutex g_prims_mutex;
std::map<DnnlKey, std::shared_ptr<const DnnlPrim>> g_prims;

std::shared_ptr<const DnnlPrim> dnnl_prim(const DnnlKey& k) {
  std::lock_guard<std::mutex> lock(g_prims_mutex);
  auto it = g_prims.find(k);
  if (it != g_prims.end()) return it->second;
  using md = dnnl::memory::desc;
  using dims = dnnl::memory::dims;
  const auto dt = static_cast<dnnl::memory::data_type>(k.dt);
  const float alpha = std::bit_cast<float>(k.alpha_bits), beta = std::bit_cast<float>(k.beta_bits);
  std::shared_ptr<DnnlPrim> p;
  try {
    // Row-major op(A) (M, K): A (M, K) has strides (lda, 1); A stored (K, M) has
    // element (m, k) at k * lda + m, strides (1, lda). Likewise B. No copies.
    const md a_md(dims{k.M, k.K}, dt, k.trans_a ? dims{1, k.lda} : dims{k.lda, 1});
    const md b_md(dims{k.K, k.N}, dt, k.trans_b ? dims{1, k.ldb} : dims{k.ldb, 1});
    const md c_md(dims{k.M, k.N}, dnnl::memory::data_type::f32, dims{k.ldc, 1});
    dnnl::primitive_attr attr;
    // User scratchpad: with the library-managed one, the same primitive must
    // not run on two threads at once (oneDNN builds without
    // DNNL_ENABLE_CONCURRENT_EXEC).
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    // dst = alpha * (A @ B) + beta * dst: output scale, then a sum post-op.
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (beta != 0.0f) {
      dnnl::post_ops po;
      po.append_sum(beta);
      attr.set_post_ops(po);
    }
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, dnnl_engine());
    p = std::make_shared<DnnlPrim>(
        DnnlPrim{pd, dnnl::matmul(pd), pd.scratchpad_desc().get_size(), pd.impl_info_str()});
  } catch (const dnnl::error& e) {
    // oneDNN 2.6.3 on an AVX2-only CPU refuses bf16 and f16 matmul outright
    // (unimplemented, not even its reference kernel).
    const std::string what =
        strfmt("oneDNN %s has no %s matmul for M=%d N=%d K=%d trans_a=%d trans_b=%d on this CPU (%s): %s%s",
               dnnl_version_string().c_str(), dnnl_dt_name(dt), k.M, k.N, k.K, k.trans_a, k.trans_b,
               cpu_features_string().c_str(), e.what(),
               e.status == dnnl_unimplemented && dt != dnnl::memory::data_type::f32 && !cpu_features().avx512f
                   ? " (oneDNN 2.6 has no bf16/f16 CPU matmul without AVX-512, not even a reference one)"
                   : "");
    if (e.status == dnnl_unimplemented) throw DnnlRefused(what);
    throw Error(what);
  }
  if (g_prims.size() >= kMaxPrims) g_prims.clear();
  g_prims.emplace(k, p);
  return p;
}

// Runs the cached primitive for this call; returns it (for its name).
std::shared_ptr<const DnnlPrim> dnnl_run(dnnl::memory::data_type dt, bool trans_a, bool trans_b, int M, int N,
                                         int K, float alpha, const void* A, int lda, const void* B, int ldb,
                                         float beta, float* C, int ldc) {
  const DnnlKey key{
      static_cast<int>(dt),         M, N, K, lda, ldb, ldc, trans_a, trans_b, std::bit_cast<uint32_t>(alpha),
      std::bit_cast<uint32_t>(beta)};
  auto p = dnnl_prim(key);
  // One engine for the process; a stream and a scratchpad per calling thread,
  // so calls from inside OpenMP parallel regions do not share state.
  thread_local dnnl::stream stream(dnnl_engine());
  thread_local std::unique_ptr<uint8_t[]> scratch;
  thread_local size_t scratch_cap = 0;
  if (p->scratch_bytes > scratch_cap) {
    scratch = std::make_unique_for_overwrite<uint8_t[]>(p->scratch_bytes);
    scratch_cap = p->scratch_bytes;
  }
  try {
    auto& eng = dnnl_engine();
    dnnl::memory a_mem(p->pd.src_desc(), eng, const_cast<void*>(A));
    dnnl::memory b_mem(p->pd.weights_desc(), eng, const_cast<void*>(B));
    dnnl::memory c_mem(p->pd.dst_desc(), eng, C);
    dnnl::memory s_mem(p->pd.scratchpad_desc(), eng, scratch.get());
    p->prim.execute(stream, {{DNNL_ARG_SRC, a_mem},
                             {DNNL_ARG_WEIGHTS, b_mem},
                             {DNNL_ARG_DST, c_mem},
                             {DNNL_ARG_SCRATCHPAD, s_mem}});
    stream.wait();
  } catch (const dnnl::error& e) {
    throw Error(strfmt("oneDNN %s matmul M=%d N=%d K=%d failed: %s", dnnl_dt_name(dt), M, N, K, e.what()));
  }
  return p;
}

dnnl::memory::data_type dnnl_dt(Precision p) {
  return p == Precision::bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f16;
}

// What oneDNN does for a dtype on this CPU, probed once with a representative
// training shape (256 x 256 x 256, no transposes, beta 1).
struct DnnlProbe {
  bool ok = false;
  std::string impl;    // implementation name when ok
  std::string reason;  // why not, when !ok
};

const DnnlProbe& dnnl_probe(Precision p) {
  static const auto probe = [](Precision dtype) {
    DnnlProbe r;
    try {
      const int n = 256;
      const DnnlKey key{
          static_cast<int>(dnnl_dt(dtype)), n, n, n, n, n, n, false, false, std::bit_cast<uint32_t>(1.0f),
          std::bit_cast<uint32_t>(1.0f)};
      r.impl = dnnl_prim(key)->impl;
      r.ok = true;
    } catch (const Error& e) {
      r.reason = e.what();
    }
    return r;
  };
  static const DnnlProbe bf = probe(Precision::bf16);
  static const DnnlProbe fp = probe(Precision::fp16);
  return p == Precision::bf16 ? bf : fp;
}

#endif  // CHORUS_DNNL

// Why path cannot run for dtype here; empty when it can.
std::string unavailable_reason(GemmPath path, Precision p) {
  if (path == GemmPath::automatic || path == GemmPath::convert) return "";
  if (p == Precision::fp32) return "fp32 operands always use sgemm";
  if (path == GemmPath::sbgemm) {
    if (p != Precision::bf16) return "openblas-sbgemm takes bf16 operands only";
    if (sbgemm_fn() == nullptr) {
      return strfmt("the loaded OpenBLAS does not export cblas_sbgemm (built without BUILD_BFLOAT16; %s)",
                    openblas_get_config());
    }
    return "";
  }
#if CHORUS_DNNL
  const DnnlProbe& probe = dnnl_probe(p);
  return probe.ok ? "" : probe.reason;
#else
  return "built without oneDNN (libdnnl-dev not found when CMake configured)";
#endif
}

constexpr bool kDnnlAutomatic = false;

GemmPath automatic_path(Precision p) {
  if (p == Precision::fp32) return GemmPath::convert;
  static const auto choose = [](Precision dtype) {
#if CHORUS_DNNL
    // Not chosen automatically (only with --gemm onednn) until it is fixed:
    // on an AMX-BF16 / AVX512-FP16 Xeon (2026-12-02) oneDNN 2.6.3's bf16
    // matmuls made a 200-step gpt-mini run end 3% above fp32 (convert+sgemm
    // stays within 1%, tests/e2e/mixed_precision_e2e_test.cpp), and its fp16
    // matmul is refused for shapes its probe accepted.
    if (kDnnlAutomatic && has_units(GemmPath::dnnl, dtype)) {
      const DnnlProbe& probe = dnnl_probe(dtype);
      if (probe.ok && probe.impl.rfind("ref", 0) != 0) return GemmPath::dnnl;
    }
#endif
    if (dtype == Precision::bf16 && has_units(GemmPath::sbgemm, dtype) && sbgemm_fn() != nullptr)
      return GemmPath::sbgemm;
    return GemmPath::convert;
  };
  static const GemmPath bf = choose(Precision::bf16);
  static const GemmPath fp = choose(Precision::fp16);
  return p == Precision::bf16 ? bf : fp;
}

}  // namespace

void set_gemm_path(GemmPath p) {
  g_path.store(p);
  g_path_set.store(true, std::memory_order_release);
}

bool gemm_path_available(GemmPath p, Precision dtype) { return unavailable_reason(p, dtype).empty(); }

GemmPath gemm_path_for(Precision p) {
  if (p == Precision::fp32) return GemmPath::convert;
  const GemmPath forced = forced_path();
  if (forced == GemmPath::automatic) return automatic_path(p);
  const std::string why = unavailable_reason(forced, p);
  if (!why.empty()) {
    throw Error(strfmt("gemm path '%s' (forced by set_gemm_path or CHORUS_GEMM) cannot run for %s here: %s",
                       gemm_path_name(forced), precision_name(p), why.c_str()));
  }
  return forced;
}

std::string gemm_describe() {
  std::string s = "cpu: " + cpu_features_string() + "; openblas " + blas_core_name() + " kernels";
#if CHORUS_DNNL
  s += "; onednn " + dnnl_version_string();
#else
  s += "; onednn not built";
#endif
  s += sbgemm_fn() != nullptr ? "; cblas_sbgemm present" : "; no cblas_sbgemm";
  GemmPath forced = GemmPath::automatic;
  try {
    forced = forced_path();
  } catch (const Error& e) {
    s += std::string("; ") + e.what();
  }
  for (Precision p : {Precision::bf16, Precision::fp16}) {
    s += std::string("; ") + precision_name(p) + ": ";
    const GemmPath path = forced == GemmPath::automatic ? automatic_path(p) : forced;
    const std::string why = unavailable_reason(path, p);
    if (!why.empty()) {
      s += strfmt("%s forced but unavailable (%s)", gemm_path_name(path), why.c_str());
      continue;
    }
    s += gemm_path_name(path);
#if CHORUS_DNNL
    if (path == GemmPath::dnnl) s += " [" + dnnl_probe(p).impl + "]";
#endif
    if (forced != GemmPath::automatic) s += " (forced)";
  }
  return s;
}

// ---- convert + sgemm ---------------------------------------------------------------

namespace {

// Grows, never shrinks: no allocation after the first call of a given size.
struct Scratch {
  std::unique_ptr<float[]> data;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      data = std::make_unique_for_overwrite<float[]>(n);
      cap = n;
    }
    return data.get();
  }
};

// Below this many elements a panel is converted on the calling thread.
constexpr size_t kParallelMin = 1 << 16;

// The stored panel src (rows, cols) with leading dimension ld, as a contiguous
// fp32 (rows, cols) in scratch.
template <typename T>
const float* panel_to_f32(Scratch& scratch, const T* src, int rows, int cols, int ld) {
  const size_t n_cols = static_cast<size_t>(cols), total = static_cast<size_t>(rows) * n_cols;
  float* dst = scratch.get(total);
  if (omp_in_parallel()) {  // already on one thread of a team: no nested fork
    for (int r = 0; r < rows; ++r)
      convert_serial(dst + r * n_cols, src + static_cast<size_t>(r) * ld, n_cols);
  } else if (ld == cols) {
    convert(dst, src, total);  // vectorised, parallel when large
  } else {
#pragma omp parallel for schedule(static) if (total > kParallelMin)
    for (int r = 0; r < rows; ++r)
      convert_serial(dst + r * n_cols, src + static_cast<size_t>(r) * ld, n_cols);
  }
  return dst;
}

template <typename T>
void gemm_convert(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const T* A, int lda,
                  const T* B, int ldb, float beta, float* C, int ldc) {
  thread_local Scratch a_scratch, b_scratch;
  // Convert the panels as stored; the transposes stay BLAS flags.
  const int a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  const float* a = panel_to_f32(a_scratch, A, a_rows, a_cols, lda);
  const float* b = panel_to_f32(b_scratch, B, b_rows, b_cols, ldb);
  gemm(trans_a, trans_b, M, N, K, alpha, a, a_cols, b, b_cols, beta, C, ldc);
}

void gemm_sbgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const bf16* A, int lda,
                 const bf16* B, int ldb, float beta, float* C, int ldc) {
  if (beta == 0.0f) {
    // Our contract is that beta == 0 overwrites NaN in C; zero C first rather
    // than depend on how this OpenBLAS's sbgemm beta kernel treats it (O(M N),
    // small next to the O(M N K) product).
    for (int i = 0; i < M; ++i) std::memset(C + static_cast<size_t>(i) * ldc, 0, N * sizeof(float));
  }
  sbgemm_fn()(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, &A->bits, lda, &B->bits, ldb, beta, C, ldc);
}

}  // namespace

// ---- entry point -------------------------------------------------------------------

template <typename T>
void gemm_mixed(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const T* A, int lda, const T* B,
                int ldb, float beta, float* C, int ldc) {
  if constexpr (std::is_same_v<T, float>) {
    gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // C = beta * C (0 when beta == 0): no operand is read
      gemm(trans_a, trans_b, M, N, 0, alpha, nullptr, lda, nullptr, ldb, beta, C, ldc);
      return;
    }
    CHORUS_CHECK(
        lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N,
        "gemm_mixed: leading dimensions too small (M=%d N=%d K=%d trans_a=%d trans_b=%d lda=%d ldb=%d "
        "ldc=%d)",
        M, N, K, trans_a, trans_b, lda, ldb, ldc);
    constexpr Precision p = precision_of<T>();
    const GemmPath path = gemm_path_for(p);
    if (path == GemmPath::dnnl) {
#if CHORUS_DNNL
      try {
        dnnl_run(dnnl_dt(p), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
      } catch (const DnnlRefused& e) {
        if (forced_path() != GemmPath::automatic) throw Error(e.what());
        // automatic: this shape is refused although the dtype is supported; fall through
      }
#endif
    }
    if constexpr (std::is_same_v<T, bf16>) {
      if (path == GemmPath::sbgemm ||
          (path == GemmPath::dnnl && has_units(GemmPath::sbgemm, p) && sbgemm_fn() != nullptr)) {
        gemm_sbgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
      }
    }
    gemm_convert(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

template void gemm_mixed<float>(bool, bool, int, int, int, float, const float*, int, const float*, int, float,
                                float*, int);
template void gemm_mixed<bf16>(bool, bool, int, int, int, float, const bf16*, int, const bf16*, int, float,
                               float*, int);
template void gemm_mixed<fp16>(bool, bool, int, int, int, float, const fp16*, int, const fp16*, int, float,
                               float*, int);

namespace detail {

std::string dnnl_gemm_f32(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                          int lda, const float* B, int ldb, float beta, float* C, int ldc) {
#if CHORUS_DNNL
  try {
    return dnnl_run(dnnl::memory::data_type::f32, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C,
                    ldc)
        ->impl;
  } catch (const DnnlRefused& e) {
    throw Error(e.what());
  }
#else
  (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B,
      (void)ldb, (void)beta, (void)C, (void)ldc;
  throw Error("detail::dnnl_gemm_f32: built without oneDNN (libdnnl-dev not found when CMake configured)");
#endif
}

size_t dnnl_cache_size() {
#if CHORUS_DNNL
  std::lock_guard<std::mutex> lock(g_prims_mutex);
  return g_prims.size();
#else
  return 0;
#endif
}

}  // namespace detail

}  // namespace chorus::backend::cpu
