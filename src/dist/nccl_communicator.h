// NCCL backend of Communicator (built with CHORUS_CUDA): buffers are device
// pointers, collectives run on the communicator's CUDA stream and each call
// waits for completion while polling ncclCommGetAsyncError; a NCCL error or a
// call that exceeds the time-out aborts the communicator (ncclCommAbort) and
// throws chorus::Error naming the rank and the call, so the app can MPI_Abort
// the job instead of hanging. The unique id is created by group rank 0 and
// broadcast over the group's host communicator (MPI).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include "dist/communicator.h"

namespace chorus::dist {

class NcclCommunicator final : public Communicator {
 public:
  // host: the same group on the host side (MPI or local), used to share the
  // unique id; device: the CUDA device of this rank; timeout_s: per call.
  NcclCommunicator(Communicator& host, int device, double timeout_s = 300.0);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  cudaStream_t stream() const { return stream_; }

  void all_reduce(void* buf, size_t n, DType t, ReduceOp op) override;
  void reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t n, DType t) override;
  void broadcast(void* buf, size_t n, DType t, int root) override;
  void barrier() override;

 private:
  void wait(const char* call);  // stream completion with async-error polling and time-out
  void check(ncclResult_t rc, const char* call);
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::string name_;
  int rank_ = 0, size_ = 1, device_ = 0;
  double timeout_s_;
  bool aborted_ = false;
};

}  // namespace chorus::dist
