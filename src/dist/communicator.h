// Collective communication over one group of ranks (DESIGN.md
// "Communication"). One interface, three backends:
//   - LocalCommunicator: a group of one (no MPI needed; a run without mpirun)
//   - MpiCommunicator:   host buffers, any MPI communicator (what CI runs)
//   - NcclCommunicator:  device buffers on a CUDA stream (src/dist/nccl_communicator.h)
// Every call is collective: all ranks of the group make it in the same order.
// Counts need not divide the group size: chunk r of n elements is
// [chunk_begin(n, size, r), chunk_begin(n, size, r + 1)).
// Failures throw chorus::Error naming the rank and the call; the app turns an
// error on any rank into MPI_Abort of the whole job (never a silent hang). A
// CollectiveObserver (dist/watchdog.h) attached to a group is told when each
// call starts and ends, so that a rank that waits too long in one can say so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace chorus::dist {

// bf16 and f16 are chorus::bf16 / chorus::fp16 (src/core/dtype.h), 2 bytes.
// Their reductions combine in fp32 and round back to the 16-bit type (round to
// nearest even) after every combine, so a sum over R ranks is rounded R - 1
// times (plus once more for avg, which scales the sum by 1/size in fp32): the
// result can depend on the reduction order (the backend's algorithm, the group
// size) and differ from the fp32 sum rounded once by up to about one 16-bit ulp
// per combine. Every rank still receives the same bits: the MPI backend reduces
// each element on exactly one rank (reduce-scatter, then all-gather); NCCL's
// maintainers state ncclAllReduce does too (NVIDIA/nccl#434). NCCL's avg
// (ncclAvg) scales each input by 1/size before the sum instead, so its bits
// can differ from the MPI backend's. max and min are exact (MPI: a NaN wins).
enum class DType { f32, f64, i32, i64, u64, bf16, f16 };
enum class ReduceOp { sum, avg, max, min };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* reduce_op_name(ReduceOp op);

// Start of chunk r when n elements are split over `size` ranks as evenly as
// possible (the first n % size chunks get one more element).
inline size_t chunk_begin(size_t n, int size, int r) {
  const size_t base = n / static_cast<size_t>(size), extra = n % static_cast<size_t>(size);
  const size_t ur = static_cast<size_t>(r);
  return ur * base + (ur < extra ? ur : extra);
}
inline size_t chunk_size(size_t n, int size, int r) {
  return chunk_begin(n, size, r + 1) - chunk_begin(n, size, r);
}

class Communicator;

// Told about every collective of the groups it observes, by the thread that
// makes the call: collective_begin on entry, collective_end on return (or on
// an exception). Calls nest when a backend builds one collective from others.
class CollectiveObserver {
 public:
  virtual ~CollectiveObserver() = default;
  // op: "all_reduce", "reduce_scatter", ...; reduce: "sum", ... or nullptr.
  virtual void collective_begin(const Communicator& group, const char* op, size_t n, DType t,
                                const char* reduce) = 0;
  virtual void collective_end() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Which group this is, for messages ("world", "dp", "tp").
  virtual const std::string& name() const = 0;

  // In place: buf (n elements) becomes the reduction over the group.
  virtual void all_reduce(void* buf, size_t n, DType t, ReduceOp op) = 0;
  // send holds n elements on every rank; recv receives this rank's chunk
  // (chunk_size(n, size, rank) elements) of the reduction.
  virtual void reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp op) = 0;
  // send holds this rank's chunk of n elements; recv (n elements) receives
  // every rank's chunk in rank order. send may alias recv + chunk_begin(rank).
  virtual void all_gather(const void* send, void* recv, size_t n, DType t) = 0;
  virtual void broadcast(void* buf, size_t n, DType t, int root) = 0;
  virtual void barrier() = 0;

  // Typed conveniences.
  void all_reduce(float* buf, size_t n, ReduceOp op) { all_reduce(buf, n, DType::f32, op); }
  void all_reduce(double* buf, size_t n, ReduceOp op) { all_reduce(buf, n, DType::f64, op); }
  void all_reduce(bf16* buf, size_t n, ReduceOp op) { all_reduce(buf, n, DType::bf16, op); }
  void all_reduce(fp16* buf, size_t n, ReduceOp op) { all_reduce(buf, n, DType::f16, op); }
  double all_reduce_scalar(double x, ReduceOp op) {
    all_reduce(&x, 1, DType::f64, op);
    return x;
  }

  // Attaches an observer to this group's collectives (nullptr detaches; not
  // owned). Set by the thread that makes the collectives, between calls.
  void set_observer(CollectiveObserver* o) { observer_ = o; }

 protected:
  // Brackets one collective for the observer: backends that can block open one
  // at the top of each call.
  class Watch {
   public:
    Watch(const Communicator& c, const char* op, size_t n, DType t, const char* reduce = nullptr)
        : o_(c.observer_) {
      if (o_) o_->collective_begin(c, op, n, t, reduce);
    }
    ~Watch() {
      if (o_) o_->collective_end();
    }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

   private:
    CollectiveObserver* o_;
  };

 private:
  CollectiveObserver* observer_ = nullptr;
};

// A group of one: every collective is a copy (or nothing).
class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string name = "world") : name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  void all_reduce(void*, size_t, DType, ReduceOp) override {}
  void reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t n, DType t) override;
  void broadcast(void*, size_t, DType, int) override {}
  void barrier() override {}

 private:
  std::string name_;
};

}  // namespace chorus::dist
