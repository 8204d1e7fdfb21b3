#include "dist/runtime.h"

#include <mpi.h>

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "dist/mpi_communicator.h"

namespace chorus::dist {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE"})
    if (std::getenv(v)) return true;
  const char* ntasks = std::getenv("SLURM_NTASKS");
  return ntasks && std::atoi(ntasks) > 1 && std::getenv("SLURM_PROCID");
}

Runtime::Runtime() {
  if (!launched_by_mpi()) {
    world_ = std::make_unique<LocalCommunicator>("world");
    return;
  }
  int provided = 0;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  CHORUS_CHECK(rc == MPI_SUCCESS, "MPI_Init_thread failed (code %d)", rc);
  CHORUS_CHECK(provided >= MPI_THREAD_FUNNELED,
               "MPI_Init_thread: the MPI library gives thread level %d, need MPI_THREAD_FUNNELED", provided);
  mpi_ = true;
  world_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world");
}

Runtime::~Runtime() {
  if (!mpi_) return;
  world_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void Runtime::abort(int code) {
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

std::unique_ptr<Communicator> Runtime::split(int color, int key, const std::string& name) {
  if (!mpi_) return std::make_unique<LocalCommunicator>(name);
  return static_cast<MpiCommunicator&>(*world_).split(color, key, name);
}

}  // namespace chorus::dist
