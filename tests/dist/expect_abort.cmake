# Runs PROGRAM MODE on 2 ranks: rank 1 fails while rank 0 waits in a collective. Passes
# when the job ends within 30 s with a non-zero status and rank 1's abort message, and
# rank 0 never got past the collective. (cmake -P: CTest's TIMEOUT is the outer guard.)
#   -DMPIEXEC=... -DMPIEXEC_NUMPROC_FLAG=-n -DMPI_FLAGS="flags separated by spaces"
#   -DPROGRAM=... -DMODE=run_or_abort|unwind
if(NOT MPIEXEC)
  message("skipped: no mpiexec was found")
  return()
endif()
separate_arguments(_flags UNIX_COMMAND "${MPI_FLAGS}")
string(TIMESTAMP _start "%s")
execute_process(COMMAND ${MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 ${_flags} ${PROGRAM} ${MODE}
                TIMEOUT 30 RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
string(TIMESTAMP _end "%s")
math(EXPR _seconds "${_end} - ${_start}")
message("mpiexec ended after ${_seconds} s with: ${_rc}\n--- stdout\n${_out}--- stderr\n${_err}---")
if(_rc MATCHES "[Tt]ime")
  message(FATAL_ERROR "the job hung: still running after 30 s although rank 1 failed")
endif()
if(_rc STREQUAL "0")
  message(FATAL_ERROR "the job ended with status 0 although rank 1 failed")
endif()
if(NOT _err MATCHES "rank 1 of 2: aborting the job")
  message(FATAL_ERROR "rank 1's abort message is missing from stderr")
endif()
if(_out MATCHES "rank 0 passed the collective")
  message(FATAL_ERROR "rank 0 got past a collective that rank 1 never joined")
endif()
message("ok: the job ended with status ${_rc} in ${_seconds} s")
