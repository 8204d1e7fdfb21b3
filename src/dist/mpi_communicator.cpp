#include "dist/mpi_communicator.h"

#include <climits>
#include <cmath>
#include <vector>

#include "core/dtype.h"
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
    case DType::bf16:  // MPI has no 16-bit float: raw 2-byte words, combined by the ops below
    case DType::f16: return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

bool is_half(DType t) { return t == DType::bf16 || t == DType::f16; }

// User-defined reductions for the 16-bit float types: each element goes to
// fp32, combines, and rounds back (round to nearest even). max and min pick one
// of the two inputs unchanged (NaN wins), so they never round.
template <class T, ReduceOp op>
void half_combine(void* in_v, void* inout_v, int* len, MPI_Datatype*) {
  const T* in = static_cast<const T*>(in_v);
  T* inout = static_cast<T*>(inout_v);
  for (int i = 0; i < *len; ++i) {
    const float a = to_f32(in[i]), b = to_f32(inout[i]);
    if constexpr (op == ReduceOp::sum) {
      inout[i] = from_f32<T>(a + b);
    } else {
      const bool take_a = std::isnan(a) || (!std::isnan(b) && (op == ReduceOp::max ? a > b : a < b));
      if (take_a) inout[i] = in[i];
    }
  }
}

// The ops, created on first use. MPI_Op_free must come before MPI_Finalize (a
// static destructor would run after it), so they are freed by a delete callback
// on an attribute of MPI_COMM_SELF: MPI_Finalize deletes those attributes first,
// while MPI is still fully usable (MPI-3.1 section 8.7.1).
struct HalfOps {
  MPI_Op op[2][3] = {{MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL}, {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL}};
  bool created = false;
};
HalfOps g_half_ops;

int free_half_ops(MPI_Comm, int, void*, void*) {
  for (auto& per_type : g_half_ops.op)
    for (MPI_Op& o : per_type)
      if (o != MPI_OP_NULL) MPI_Op_free(&o);
  g_half_ops.created = false;
  return MPI_SUCCESS;
}

void create_half_ops() {
  MPI_User_function* fns[2][3] = {
      {half_combine<bf16, ReduceOp::sum>, half_combine<bf16, ReduceOp::max>, half_combine<bf16, ReduceOp::min>},
      {half_combine<fp16, ReduceOp::sum>, half_combine<fp16, ReduceOp::max>, half_combine<fp16, ReduceOp::min>}};
  for (int t = 0; t < 2; ++t)
    for (int k = 0; k < 3; ++k) {
      const int rc = MPI_Op_create(fns[t][k], /*commute=*/1, &g_half_ops.op[t][k]);
      CHORUS_CHECK(rc == MPI_SUCCESS, "MPI_Op_create for the 16-bit reductions failed (code %d)", rc);
    }
  int key = MPI_KEYVAL_INVALID;
  int rc = MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, free_half_ops, &key, nullptr);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_attr(MPI_COMM_SELF, key, nullptr);
  CHORUS_CHECK(rc == MPI_SUCCESS, "registering the 16-bit reductions' clean-up failed (code %d)", rc);
  MPI_Comm_free_keyval(&key);  // the attribute keeps the key alive until MPI_Finalize
  g_half_ops.created = true;
}

MPI_Op mpi_op(ReduceOp op, DType t) {
  if (is_half(t)) {
    if (!g_half_ops.created) create_half_ops();
    const int k = op == ReduceOp::max ? 1 : op == ReduceOp::min ? 2 : 0;  // avg = sum, then scale
    return g_half_ops.op[t == DType::bf16 ? 0 : 1][k];
  }
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

template <class T>
void scale_half(void* buf, size_t n, int size) {
  T* p = static_cast<T*>(buf);
  const float s = 1.0f / static_cast<float>(size);
  for (size_t i = 0; i < n; ++i) p[i] = from_f32<T>(to_f32(p[i]) * s);
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
    case DType::bf16: scale_half<bf16>(buf, n, size); break;
    case DType::f16: scale_half<fp16>(buf, n, size); break;
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
  const Watch w(*this, "all_reduce", n, t, reduce_op_name(op));
  char* p = static_cast<char*>(buf);
  const size_t es = dtype_size(t);
  if (is_half(t)) {
    // The standard requires MPI_Allreduce to give every rank identical results
    // (MPI-3.1 section 5.9.6), but implementations have shipped algorithms that
    // combine in a different order on different ranks (MPICH recexch,
    // pmodels/mpich#6538; Open MPI discussion in open-mpi/ompi#11721), which
    // for a rounding op means different bits and replicas that drift.
    // Reduce-scatter then all-gather computes every element on exactly one
    // rank, so all ranks get identical bits by construction (and the same bits
    // reduce_scatter gives that element's owner), at a ring all-reduce's
    // bandwidth; the cost is a second collective's latency.
    if (size_ == 1) return;
    std::vector<char> chunk;
    for (size_t done = 0; done < n;) {
      const size_t take = std::min(kMaxCount, n - done);
      chunk.resize(chunk_size(take, size_, rank_) * es);
      reduce_scatter(p + done * es, chunk.data(), take, t, op);  // scales for avg
      all_gather(chunk.data(), p + done * es, take, t);
      done += take;
    }
    return;
  }
  for (size_t done = 0; done < n;) {
    const size_t take = std::min(kMaxCount, n - done);
    check(MPI_Allreduce(MPI_IN_PLACE, p + done * es, static_cast<int>(take), mpi_type(t), mpi_op(op, t), comm_),
          "MPI_Allreduce");
    done += take;
  }
  if (op == ReduceOp::avg && size_ > 1) scale(buf, n, t, size_);
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp op) {
  const Watch w(*this, "reduce_scatter", n, t, reduce_op_name(op));
  CHORUS_CHECK(n / static_cast<size_t>(size_) < kMaxCount, "reduce_scatter: %zu elements is too many per rank", n);
  std::vector<int> counts(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) counts[static_cast<size_t>(r)] = static_cast<int>(chunk_size(n, size_, r));
  check(MPI_Reduce_scatter(send, recv, counts.data(), mpi_type(t), mpi_op(op, t), comm_), "MPI_Reduce_scatter");
  if (op == ReduceOp::avg && size_ > 1) scale(recv, chunk_size(n, size_, rank_), t, size_);
}

void MpiCommunicator::all_gather(const void* send, void* recv, size_t n, DType t) {
  const Watch w(*this, "all_gather", n, t);
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
  const Watch w(*this, "broadcast", n, t);
  char* p = static_cast<char*>(buf);
  const size_t es = dtype_size(t);
  for (size_t done = 0; done < n;) {
    const size_t take = std::min(kMaxCount, n - done);
    check(MPI_Bcast(p + done * es, static_cast<int>(take), mpi_type(t), root, comm_), "MPI_Bcast");
    done += take;
  }
}

void MpiCommunicator::barrier() {
  const Watch w(*this, "barrier", 0, DType::f32);
  check(MPI_Barrier(comm_), "MPI_Barrier");
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, int key, std::string name) const {
  MPI_Comm out = MPI_COMM_NULL;
  check(MPI_Comm_split(comm_, color, key, &out), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(out, std::move(name));
}

}  // namespace chorus::dist
