#include "checkpoint/bench.h"

#include <cstring>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "checkpoint/durable.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"

namespace chorus::checkpoint {

namespace fs = std::filesystem;

double sha256_mb_per_s(size_t mb) {
  std::vector<char> buf(mb << 20);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131);
  Timer t;
  Sha256 h;
  h.update(buf.data(), buf.size());
  (void)h.hex_digest();
  return static_cast<double>(buf.size()) / 1e6 / t.seconds();
}

std::vector<BenchRound> run_bench(dist::ParallelGrid& grid, const BenchOptions& opt) {
  CHORUS_CHECK(opt.rounds >= 1, "rounds: must be >= 1, got %d", opt.rounds);
  CHORUS_CHECK(!opt.dir.empty(), "dir: must be set");
  models::Gpt model(opt.model, 1, 1, &grid.tp());
  model.init_weights(1234);
  const Layout layout{grid.tp_size(), grid.dp_size(), opt.zero};
  const FlatRange range = optimizer_range(model.n_params(), layout, grid.dp_rank());
  // Adam moments with realistic, non-constant values.
  std::vector<float> m(range.size()), v(range.size());
  Rng rng(7, static_cast<uint64_t>(grid.world_rank()));
  for (size_t i = 0; i < m.size(); ++i) {
    m[i] = 1e-3f * rng.normal();
    v[i] = m[i] * m[i];
  }
  RankState st;
  st.tensors = tensor_table(model);
  for (const auto& p : model.param_table()) st.offsets.push_back(p.offset);
  st.params = model.params();
  st.opt_range = range;
  st.exp_avg = m;
  st.exp_avg_sq = v;
  st.rng = rng.state();

  std::vector<float> p2(st.params.size()), m2(m.size()), v2(v.size());
  RankState back = st;
  back.params = p2;
  back.exp_avg = m2;
  back.exp_avg_sq = v2;

  Manifest meta;
  meta.model = opt.model;
  meta.tokenizer_hash = "bench";
  meta.layout.zero = opt.zero;
  meta.sampler.seq_len = opt.model.context;
  meta.run = {{"bench", true}};
  std::vector<BenchRound> out;
  for (int r = 0; r < opt.rounds; ++r) {
    meta.step = r + 1;
    meta.schedule.position = r + 1;
    meta.optimizer.t = r + 1;
    const SaveResult s = save_checkpoint(grid, opt.dir, meta, st, /*keep_last=*/1);
    if (opt.cold && grid.world_rank() == 0)
      for (const auto& e : fs::directory_iterator(s.path)) drop_from_page_cache(e.path().string());
    grid.world().barrier();
    std::fill(p2.begin(), p2.end(), 0.0f);
    const LoadResult l = load_checkpoint(grid, s.path, opt.zero, opt.model, "bench", back);
    const bool same = std::memcmp(p2.data(), st.params.data(), p2.size() * sizeof(float)) == 0 &&
                      std::memcmp(m2.data(), m.data(), m.size() * sizeof(float)) == 0 &&
                      std::memcmp(v2.data(), v.data(), v.size() * sizeof(float)) == 0;
    CHORUS_CHECK(grid.world().all_reduce_scalar(same ? 1.0 : 0.0, dist::ReduceOp::min) > 0,
                 "bench: the loaded state differs from the saved one (round %d)", r + 1);
    BenchRound b;
    b.bytes_written = s.bytes;
    b.bytes_read = l.bytes;
    b.write_s = grid.world().all_reduce_scalar(s.seconds, dist::ReduceOp::max);
    b.read_s = l.seconds;
    out.push_back(b);
    log_info("round %d: %s, %.1f MB: write %.2f s = %.0f MB/s, %s read %.2f s = %.0f MB/s", r + 1,
             layout.describe().c_str(), b.bytes_written / 1e6, b.write_s, b.write_mb_s(),
             opt.cold ? "cold" : "warm", b.read_s, b.read_mb_s());
  }
  return out;
}

}  // namespace chorus::checkpoint
