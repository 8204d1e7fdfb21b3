// NcclCommunicator on device buffers (label gpu). Runs under mpirun -np 1 and
// -np 2; each rank uses CUDA device (rank % devices). Skips cleanly when there
// is no device, or fewer devices than ranks (NCCL refuses two ranks on one GPU).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

#include "dist/nccl_communicator.h"
#include "dist_test_env.h"

using namespace chorus::dist;
using chorus::dist::testing::g_runtime;

namespace {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

template <class T>
T* to_device(const std::vector<T>& v) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, v.size() * sizeof(T) + 1), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <class T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

}  // namespace

TEST(Nccl, CollectivesMatchClosedForms) {
  Communicator& host = g_runtime->world();
  const int R = host.size(), r = host.rank();
  const int n_dev = device_count();
  // every rank must take the same decision, or the others would hang in NCCL init
  const double can = host.all_reduce_scalar(n_dev >= R ? 1.0 : 0.0, ReduceOp::min);
  if (can < 1.0) GTEST_SKIP() << "needs " << R << " CUDA device(s), found " << n_dev;
  NcclCommunicator nccl(host, r % n_dev, 60.0);
  const double S = R * (R + 1) / 2.0;
  for (size_t n : {size_t(1), size_t(7), size_t(1001)}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = float((r + 1) * (i + 1));
    float* d = to_device(x);
    nccl.all_reduce(d, n, DType::f32, ReduceOp::sum);
    auto y = to_host(d, n);
    for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(y[i], float((i + 1) * S));
    cudaMemcpy(d, x.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    nccl.all_reduce(d, n, DType::f32, ReduceOp::avg);
    y = to_host(d, n);
    for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(y[i], float((i + 1) * S / R));

    const size_t b = chunk_begin(n, R, r), k = chunk_size(n, R, r);
    float* chunk = to_device(std::vector<float>(k + 1, -1.0f));
    cudaMemcpy(d, x.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    nccl.reduce_scatter(d, chunk, n, DType::f32, ReduceOp::sum);
    auto c = to_host(chunk, k + 1);
    for (size_t i = 0; i < k; ++i) ASSERT_FLOAT_EQ(c[i], float((b + i + 1) * S));
    ASSERT_EQ(c[k], -1.0f);

    std::vector<double> mine(k);
    for (size_t i = 0; i < k; ++i) mine[i] = r * 1000.0 + double(i);
    double* dm = to_device(mine);
    double* full = to_device(std::vector<double>(n, -1.0));
    nccl.all_gather(dm, full, n, DType::f64);
    auto f = to_host(full, n);
    for (int q = 0; q < R; ++q)
      for (size_t i = 0; i < chunk_size(n, R, q); ++i) ASSERT_EQ(f[chunk_begin(n, R, q) + i], q * 1000.0 + i);

    std::vector<int64_t> v(n, r);
    int64_t* dv = to_device(v);
    nccl.broadcast(dv, n, DType::i64, R - 1);
    for (auto e : to_host(dv, n)) ASSERT_EQ(e, R - 1);
    nccl.barrier();
    for (void* p : {static_cast<void*>(d), static_cast<void*>(chunk), static_cast<void*>(dm), static_cast<void*>(full),
                    static_cast<void*>(dv)})
      cudaFree(p);
  }
}
