# Configures and builds a few test programs of this source tree in another build
# configuration, then runs them; run by CTest as `cmake -P`:
#   SOURCE_DIR  the project      WORK_DIR  scratch build directory
#   OPTIONS     ;-list of -D options for the variant   TARGETS  ;-list of test targets
#   JOBS        parallel build jobs (default 1)
set(build ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${build} -DCMAKE_BUILD_TYPE=Release
                        -DCTDL_BUILD_BENCHMARKS=OFF -DCTDL_BUILD_EXAMPLES=OFF ${OPTIONS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the variant (${OPTIONS}) failed:\n${out}")
endif()
if(NOT JOBS)
  set(JOBS 1)
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${build} --parallel ${JOBS} --target ${TARGETS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the variant (${OPTIONS}) failed:\n${out}")
endif()
foreach(t IN LISTS TARGETS)
  execute_process(COMMAND ${build}/tests/${t} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${t} failed in the variant (${OPTIONS}):\n${out}")
  endif()
  string(REGEX MATCH "All tests passed[^\n]*" summary "${out}")
  message(STATUS "${t} (${OPTIONS}): ${summary}")
endforeach()
