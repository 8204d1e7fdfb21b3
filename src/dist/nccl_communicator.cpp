#include "dist/nccl_communicator.h"

#include <chrono>
#include <thread>
#include <vector>

#include "core/error.h"

namespace chorus::dist {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u64: return ncclUint64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

void cuda_check(cudaError_t rc, const char* call, const std::string& who) {
  if (rc != cudaSuccess) throw Error(strfmt("%s: %s failed: %s", who.c_str(), call, cudaGetErrorString(rc)));
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& host, int device, double timeout_s)
    : name_(host.name()), rank_(host.rank()), size_(host.size()), device_(device), timeout_s_(timeout_s) {
  const std::string who = strfmt("nccl %s group rank %d", name_.c_str(), rank_);
  cuda_check(cudaSetDevice(device_), "cudaSetDevice", who);
  cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate", who);
  ncclUniqueId id;
  if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  static_assert(sizeof(ncclUniqueId) % sizeof(int32_t) == 0);
  host.broadcast(&id, sizeof(id) / sizeof(int32_t), DType::i32, 0);  // raw bytes as 32 int32
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // non-blocking init so a dead peer shows up as a time-out, not a hang
  check(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "ncclCommInitRankConfig");
  wait("ncclCommInitRankConfig");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) {
    if (aborted_) ncclCommAbort(comm_);
    else ncclCommDestroy(comm_);
  }
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::check(ncclResult_t rc, const char* call) {
  if (rc == ncclSuccess || rc == ncclInProgress) return;
  if (comm_ && !aborted_) {
    ncclCommAbort(comm_);
    aborted_ = true;
    comm_ = nullptr;
  }
  throw Error(strfmt("nccl %s group rank %d of %d: %s failed: %s", name_.c_str(), rank_, size_, call,
                     ncclGetErrorString(rc)));
}

void NcclCommunicator::wait(const char* call) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    ncclResult_t async = ncclSuccess;
    if (comm_) check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
    if (async != ncclSuccess && async != ncclInProgress) check(async, call);
    if (async == ncclSuccess) {
      cudaError_t s = cudaStreamQuery(stream_);
      if (s == cudaSuccess) return;
      if (s != cudaErrorNotReady)
        throw Error(strfmt("nccl %s group rank %d: %s: stream error %s", name_.c_str(), rank_, call,
                           cudaGetErrorString(s)));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      if (comm_) ncclCommAbort(comm_);
      comm_ = nullptr;
      aborted_ = true;
      throw Error(strfmt("nccl %s group rank %d of %d: %s timed out after %.0f s (a peer rank died or hangs)",
                         name_.c_str(), rank_, size_, call, timeout_s_));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void NcclCommunicator::all_reduce(void* buf, size_t n, DType t, ReduceOp op) {
  const Watch w(*this, "all_reduce", n, t, reduce_op_name(op));
  check(ncclAllReduce(buf, buf, n, nccl_type(t), nccl_op(op), comm_, stream_), "ncclAllReduce");
  wait("ncclAllReduce");
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp op) {
  const Watch w(*this, "reduce_scatter", n, t, reduce_op_name(op));
  // NCCL's reduce-scatter needs equal chunks; uneven counts go as one
  // reduce per rank-chunk (ncclReduce to the chunk owner) inside a group call.
  const size_t es = dtype_size(t);
  if (n % static_cast<size_t>(size_) == 0) {
    check(ncclReduceScatter(send, recv, n / size_, nccl_type(t), nccl_op(op), comm_, stream_), "ncclReduceScatter");
  } else {
    check(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < size_; ++r) {
      const char* src = static_cast<const char*>(send) + chunk_begin(n, size_, r) * es;
      check(ncclReduce(src, r == rank_ ? recv : nullptr, chunk_size(n, size_, r), nccl_type(t), nccl_op(op), r, comm_,
                       stream_),
            "ncclReduce");
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
  }
  wait("ncclReduceScatter");
}

void NcclCommunicator::all_gather(const void* send, void* recv, size_t n, DType t) {
  const Watch w(*this, "all_gather", n, t);
  const size_t es = dtype_size(t);
  if (n % static_cast<size_t>(size_) == 0) {
    check(ncclAllGather(send, recv, n / size_, nccl_type(t), comm_, stream_), "ncclAllGather");
  } else {
    // Uneven chunks: one broadcast per owner, grouped.
    char* out = static_cast<char*>(recv);
    check(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < size_; ++r) {
      char* dst = out + chunk_begin(n, size_, r) * es;
      check(ncclBroadcast(r == rank_ ? send : dst, dst, chunk_size(n, size_, r), nccl_type(t), r, comm_, stream_),
            "ncclBroadcast");
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
  }
  wait("ncclAllGather");
}

void NcclCommunicator::broadcast(void* buf, size_t n, DType t, int root) {
  const Watch w(*this, "broadcast", n, t);
  check(ncclBroadcast(buf, buf, n, nccl_type(t), root, comm_, stream_), "ncclBroadcast");
  wait("ncclBroadcast");
}

void NcclCommunicator::barrier() {
  const Watch w(*this, "barrier", 0, DType::f32);
  // A one-element all-reduce on a scratch device word is NCCL's barrier.
  float* scratch = nullptr;
  cuda_check(cudaMallocAsync(reinterpret_cast<void**>(&scratch), sizeof(float), stream_), "cudaMallocAsync",
             name_);
  cuda_check(cudaMemsetAsync(scratch, 0, sizeof(float), stream_), "cudaMemsetAsync", name_);
  check(ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce(barrier)");
  cuda_check(cudaFreeAsync(scratch, stream_), "cudaFreeAsync", name_);
  wait("barrier");
}

}  // namespace chorus::dist
