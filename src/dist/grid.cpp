#include "dist/grid.h"

#include "core/error.h"

namespace chorus::dist {

ParallelGrid::ParallelGrid(Runtime& runtime, int tp) {
  world_ = &runtime.world();
  const int world = world_->size(), rank = world_->rank();
  CHORUS_CHECK(tp >= 1, "tp: must be >= 1, got %d", tp);
  CHORUS_CHECK(world % tp == 0, "tp: %d does not divide the world size %d (ranks launched by mpirun)", tp, world);
  tp_ = runtime.split(/*color=*/rank / tp, /*key=*/rank % tp, "tp");
  dp_ = runtime.split(/*color=*/rank % tp, /*key=*/rank / tp, "dp");
}

ParallelGrid ParallelGrid::single() {
  ParallelGrid g;
  g.owned_world_ = std::make_unique<LocalCommunicator>("world");
  g.world_ = g.owned_world_.get();
  g.tp_ = std::make_unique<LocalCommunicator>("tp");
  g.dp_ = std::make_unique<LocalCommunicator>("dp");
  return g;
}

std::string ParallelGrid::describe() const {
  return strfmt("world %d = dp %d x tp %d", world_size(), dp_size(), tp_size());
}

void ParallelGrid::check_divides(int n_head, int mlp_width, int padded_vocab) const {
  const int tp = tp_size();
  CHORUS_CHECK(n_head % tp == 0, "tp: %d does not divide n-head %d (attention heads are split across TP ranks)", tp,
               n_head);
  CHORUS_CHECK(mlp_width % tp == 0, "tp: %d does not divide the MLP width %d", tp, mlp_width);
  CHORUS_CHECK(padded_vocab % tp == 0, "tp: %d does not divide the padded vocabulary %d", tp, padded_vocab);
}

}  // namespace chorus::dist
