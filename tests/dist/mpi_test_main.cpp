// main() for tests/dist: starts MPI (the tests run under mpirun), runs the
// GoogleTest suite on every rank, and fails the job if any rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include "dist/runtime.h"
#include "dist_test_env.h"

#include <cstdio>

namespace chorus::dist::testing {
Runtime* g_runtime = nullptr;
}

namespace {
// Non-zero ranks print only their failures, prefixed with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};
}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  chorus::dist::Runtime runtime;
  chorus::dist::testing::g_runtime = &runtime;
  if (runtime.world().rank() != 0) {
    // Only rank 0 prints the usual report; other ranks print failures only.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(runtime.world().rank()));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = failed;
  if (runtime.uses_mpi()) MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return any_failed;
}
