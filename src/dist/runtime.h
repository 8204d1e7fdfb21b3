// Process-level distributed start-up. Under mpirun / srun (detected from the
// launcher's environment: OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_SIZE,
// SLURM_NTASKS > 1) it calls MPI_Init_thread and the world is MPI_COMM_WORLD;
// otherwise the process is a world of one and MPI is never touched.
#pragma once

#include <memory>

#include "dist/communicator.h"

namespace chorus::dist {

class Runtime {
 public:
  Runtime();   // initialises MPI when launched by an MPI launcher
  ~Runtime();  // MPI_Finalize (when initialised)
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  bool uses_mpi() const { return mpi_; }
  Communicator& world() { return *world_; }
  // Ends every rank of the job at once (MPI_Abort); for fatal errors on one rank.
  [[noreturn]] void abort(int code);
  // Builds a sub-group of the world: ranks with equal color, ordered by key.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name);

 private:
  bool mpi_ = false;
  std::unique_ptr<Communicator> world_;
};

// True when the environment says an MPI launcher started this process.
bool launched_by_mpi();

}  // namespace chorus::dist
