#include "dist/communicator.h"

#include <cstring>

#include "core/error.h"

namespace chorus::dist {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u64: return "u64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
  }
  return "?";
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
  }
  return "?";
}

void LocalCommunicator::reduce_scatter(const void* send, void* recv, size_t n, DType t, ReduceOp) {
  if (send != recv) std::memmove(recv, send, n * dtype_size(t));
}

void LocalCommunicator::all_gather(const void* send, void* recv, size_t n, DType t) {
  if (send != recv) std::memmove(recv, send, n * dtype_size(t));
}

}  // namespace chorus::dist
