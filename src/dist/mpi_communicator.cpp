#include "dist/mpi_communicator.h"

#include <climits>
#include <vector>

#include "core/error.h"

namespace chorus::dist {

namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::u64: return MPI_UINT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

void scale(void* buf, size_t n, DType t, int size) {
  switch (t) {
    case DType::f32: {
      float* p = static_cast<float*>(buf);
      const float s = 1.0f / static_cast<float>(size);
      for (size_t i = 0; i < n; ++i) p[i] *= s;
      break;
    }
    case DType::f64: {
      double* p = static_cast<double*>(buf);
      for (size_t i = 0; i < n; ++i) p[i] /= size;
      break;
    }
    case DType::i32: for (size_t i = 0; i < n; ++i) static_cast<int32_t*>(buf)[i] /= size; break;
    case DType::i64: for (size_t i = 0; i < n; ++i) static_cast<int64_t*>(buf)[i] /= size; break;
    case DType::u64: for (size_t i = 0; i < n; ++i) static_cast<uint64_t*>(buf)[i] /= static_cast<uint64_t>(size); break;
  }
}

constexpr size_t kMaxCount = static_cast<size_t>(INT_MAX) / 2;

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check(int rc, const char* call) const {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  int world_rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  throw Error(strfmt("rank %d: %s on the %s group (rank %d of %d) failed: %.*s", world_rank, call, name_.c_str(),
                     rank_, size_, len, msg));
}

void MpiCommunicator::all_reduce(void* buf, size_t n, DType t, ReduceOp op) {
  char* p = static_cast<char*>(buf);
  const size_t es = dtype_size(t);
  for (size_t done = 0; done < n;) {
    const size_t take = std::min(kMaxCount, n - done);
    check(MPI_Allreduce(MPI_IN_PLACE, p + done * es, static_cast<int>(take), mpi_type(t), mpi_op(op), comm_),
          "MPI_Allreduce");
    done += take;
  }
  if (op == ReduceOp::avg && size_ > 1) scale(buf, n, t, size_);
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp op) {
  CHORUS_CHECK(n / static_cast<size_t>(size_) < kMaxCount, "reduce_scatter: %zu elements is too many per rank", n);
  std::vector<int> counts(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) counts[static_cast<size_t>(r)] = static_cast<int>(chunk_size(n, size_, r));
  check(MPI_Reduce_scatter(send, recv, counts.data(), mpi_type(t), mpi_op(op), comm_), "MPI_Reduce_scatter");
  if (op == ReduceOp::avg && size_ > 1) scale(recv, chunk_size(n, size_, rank_), t, size_);
}

void MpiCommunicator::all_gather(const void* send, void* recv, size_t n, DType t) {
  CHORUS_CHECK(n / static_cast<size_t>(size_) < kMaxCount, "all_gather: %zu elements is too many per rank", n);
  std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    counts[static_cast<size_t>(r)] = static_cast<int>(chunk_size(n, size_, r));
    displs[static_cast<size_t>(r)] = static_cast<int>(chunk_begin(n, size_, r));
  }
  const char* mine = static_cast<const char*>(recv) + chunk_begin(n, size_, rank_) * dtype_size(t);
  const void* src = (send == mine) ? MPI_IN_PLACE : send;
  check(MPI_Allgatherv(src, counts[static_cast<size_t>(rank_)], mpi_type(t), recv, counts.data(), displs.data(),
                       mpi_type(t), comm_),
        "MPI_Allgatherv");
}

void MpiCommunicator::broadcast(void* buf, size_t n, DType t, int root) {
  char* p = static_cast<char*>(buf);
  const size_t es = dtype_size(t);
  for (size_t done = 0; done < n;) {
    const size_t take = std::min(kMaxCount, n - done);
    check(MPI_Bcast(p + done * es, static_cast<int>(take), mpi_type(t), root, comm_), "MPI_Bcast");
    done += take;
  }
}

void MpiCommunicator::barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, int key, std::string name) const {
  MPI_Comm out = MPI_COMM_NULL;
  check(MPI_Comm_split(comm_, color, key, &out), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(out, std::move(name));
}

}  // namespace chorus::dist
