// A rank that fails ends the whole job (run by expect_abort.cmake on 2 ranks): rank 1
// throws while rank 0 enters a barrier that rank 1 will never join. Without MPI_Abort
// rank 0 would wait forever.
//   mode run_or_abort: the failure goes through run_or_abort -> MpiComm::abort_job;
//   mode unwind:       the exception leaves MpiComm's and MpiEnvironment's scope, and
//                      their destructors abort (main catches it, too late to matter).
#include <ctdl/dist/mpi.hpp>

#include <cstdio>
#include <string>

namespace dist = ctdl::dist;

namespace {

void work(dist::MpiComm& comm, const std::string& mode) {
  if (comm.rank() == 1) throw ctdl::Error("rank 1 fails on purpose (" + mode + ")");
  comm.barrier();
  std::printf("rank %d passed the collective\n", comm.rank());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "run_or_abort" && mode != "unwind") {
    std::fprintf(stderr, "usage: mpiexec -n 2 %s run_or_abort|unwind\n", argv[0]);
    return 2;
  }
  try {
    dist::MpiEnvironment mpi(argc, argv);
    dist::MpiComm comm(mpi);
    if (mode == "run_or_abort") {
      dist::run_or_abort(comm, [&] { work(comm, mode); });
    } else {
      work(comm, mode);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "caught after MPI ended: %s\n", e.what());
    return 1;
  }
  return 0;
}
