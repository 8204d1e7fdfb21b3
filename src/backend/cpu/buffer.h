// A fixed-size, zero-initialised, 64-byte aligned float array: the one
// allocation behind a model's parameters, gradients or activations. Aligned to
// a cache line so AVX-512 loads never split lines and so two tensors that
// start on line boundaries never share one between threads.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace chorus::backend::cpu {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 64;  // bytes

  AlignedBuffer() = default;
  // n floats, all zero.
  explicit AlignedBuffer(size_t n) : size_(n) {
    if (n == 0) return;
    size_t bytes = (n * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
    data_ = static_cast<float*>(std::aligned_alloc(kAlignment, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    std::memset(data_, 0, bytes);
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }  // in floats

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace chorus::backend::cpu
