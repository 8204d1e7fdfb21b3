// MPI backend of Communicator: host buffers, one MPI communicator. The MPI
// error handler is MPI_ERRORS_RETURN, so a failed call throws chorus::Error
// naming the group, the rank and the call instead of aborting silently.
// bf16 / f16 travel as MPI_UINT16_T; their reductions are user-defined MPI_Ops
// (fp32 combine, rounded back), created on first use and freed by MPI_Finalize,
// and their all_reduce is reduce_scatter + all_gather so that every rank gets
// the same bits (see DType in dist/communicator.h).
#pragma once

#include <mpi.h>

#include "dist/communicator.h"

namespace chorus::dist {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of comm (freed in the destructor) unless it is MPI_COMM_WORLD.
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm comm() const { return comm_; }

  void all_reduce(void* buf, size_t n, DType t, ReduceOp op) override;
  void reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t n, DType t) override;
  void broadcast(void* buf, size_t n, DType t, int root) override;
  void barrier() override;

  // Splits this group: ranks with the same color form a new group, ordered by key.
  std::unique_ptr<MpiCommunicator> split(int color, int key, std::string name) const;

 private:
  void check(int rc, const char* call) const;
  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1;
};

}  // namespace chorus::dist
