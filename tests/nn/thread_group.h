// Test helper: a tensor-parallel group of R ranks simulated by R threads of
// one process, so the parallel layers can be checked against the plain ones
// without MPI. Every collective is deterministic (ranks combined in rank
// order) and gives bit-identical results on every rank, as the real backends.
#pragma once

#include <barrier>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"

namespace chorus::testing {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), sync_(size), bufs_(static_cast<size_t>(size)) {}

  // Runs f(comm) once per rank, each on its own thread, and joins them. Every
  // rank must make the same collective calls in the same order.
  void run(const std::function<void(dist::Communicator&)>& f) {
    std::vector<std::thread> threads;
    for (int r = 0; r < size_; ++r)
      threads.emplace_back([this, r, &f] {
        Comm comm(*this, r);
        f(comm);
      });
    for (auto& t : threads) t.join();
  }

 private:
  class Comm final : public dist::Communicator {
   public:
    Comm(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return g_.size_; }
    const std::string& name() const override { return name_; }

    void all_reduce(void* buf, size_t n, dist::DType t, dist::ReduceOp op) override {
      publish(buf);
      std::vector<char> out(n * dist::dtype_size(t));
      reduce(out.data(), 0, n, t, op);
      g_.sync_.arrive_and_wait();  // every rank has read every buffer
      std::memcpy(buf, out.data(), out.size());
    }
    void reduce_scatter(const void* send, void* recv, size_t n, dist::DType t, dist::ReduceOp op) override {
      publish(send);
      reduce(recv, dist::chunk_begin(n, size(), rank_), dist::chunk_size(n, size(), rank_), t, op);
      g_.sync_.arrive_and_wait();
    }
    void all_gather(const void* send, void* recv, size_t n, dist::DType t) override {
      publish(send);
      const size_t es = dist::dtype_size(t);
      for (int r = 0; r < size(); ++r) {
        char* dst = static_cast<char*>(recv) + dist::chunk_begin(n, size(), r) * es;
        const void* src = g_.bufs_[static_cast<size_t>(r)];
        if (src != dst) std::memcpy(dst, src, dist::chunk_size(n, size(), r) * es);
      }
      g_.sync_.arrive_and_wait();
    }
    void broadcast(void* buf, size_t n, dist::DType t, int root) override {
      publish(buf);
      if (rank_ != root) std::memcpy(buf, g_.bufs_[static_cast<size_t>(root)], n * dist::dtype_size(t));
      g_.sync_.arrive_and_wait();
    }
    void barrier() override { g_.sync_.arrive_and_wait(); }

   private:
    void publish(const void* buf) {
      g_.bufs_[static_cast<size_t>(rank_)] = buf;
      g_.sync_.arrive_and_wait();
    }
    // out[0, count) = reduction over the ranks of elements [first, first + count).
    void reduce(void* out, size_t first, size_t count, dist::DType t, dist::ReduceOp op) {
      switch (t) {
        case dist::DType::f32:
          return reduce_as<float>(out, first, count, op);
        case dist::DType::f64:
          return reduce_as<double>(out, first, count, op);
        default:
          throw std::runtime_error("ThreadGroup: only f32 and f64 reductions");
      }
    }
    template <class T>
    void reduce_as(void* out_v, size_t first, size_t count, dist::ReduceOp op) {
      T* out = static_cast<T*>(out_v);
      for (size_t i = 0; i < count; ++i) {
        T acc = static_cast<const T*>(g_.bufs_[0])[first + i];
        for (int r = 1; r < size(); ++r) {
          const T x = static_cast<const T*>(g_.bufs_[static_cast<size_t>(r)])[first + i];
          switch (op) {
            case dist::ReduceOp::sum:
            case dist::ReduceOp::avg:
              acc += x;
              break;
            case dist::ReduceOp::max:
              acc = x > acc ? x : acc;
              break;
            case dist::ReduceOp::min:
              acc = x < acc ? x : acc;
              break;
          }
        }
        out[i] = op == dist::ReduceOp::avg ? acc / static_cast<T>(size()) : acc;
      }
    }

    ThreadGroup& g_;
    int rank_;
    std::string name_ = "tp";
  };

  int size_;
  std::barrier<> sync_;
  std::vector<const void*> bufs_;
};

}  // namespace chorus::testing
