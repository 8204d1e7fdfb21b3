// The data-parallel x tensor-parallel grid (DESIGN.md, Megatron's rank
// generator with order "tp-dp"): TP groups are consecutive world ranks, so
// world rank = dp_rank * tp + tp_rank, and DP = world / TP. Created in one
// place and passed explicitly: there is no global parallel state.
#pragma once

#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/runtime.h"

namespace chorus::dist {

class ParallelGrid {
 public:
  // Throws chorus::Error when tp does not divide the world size.
  ParallelGrid(Runtime& runtime, int tp);
  // A grid of one rank (tests, tools).
  static ParallelGrid single();

  int world_rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  int tp_rank() const { return tp_->rank(); }
  int tp_size() const { return tp_->size(); }
  int dp_rank() const { return dp_->rank(); }
  int dp_size() const { return dp_->size(); }
  Communicator& world() { return *world_; }
  Communicator& tp() { return *tp_; }
  Communicator& dp() { return *dp_; }
  std::string describe() const;  // "world 4 = dp 2 x tp 2"

  // Refuses (naming the quantity) a TP degree that does not divide the heads,
  // the MLP width or the padded vocabulary.
  void check_divides(int n_head, int mlp_width, int padded_vocab) const;

 private:
  ParallelGrid() = default;
  Communicator* world_ = nullptr;
  std::unique_ptr<Communicator> owned_world_, tp_, dp_;
};

}  // namespace chorus::dist
