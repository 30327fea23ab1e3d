# Compile-fail check, run by CTest as `cmake -P`:
#   CXX       compiler     INCLUDES  include directories (;-list)
#   SOURCE    the snippet  EXPECT    regular expression the failing compile must print
# The snippet must compile with -DCTDL_CONTROL (proving the test exercises what it says)
# and must fail without it, printing EXPECT.
set(flags -std=c++20 -fsyntax-only -fopenmp)
foreach(dir IN LISTS INCLUDES)
  list(APPEND flags -I${dir})
endforeach()

execute_process(COMMAND ${CXX} ${flags} -DCTDL_CONTROL ${SOURCE}
  RESULT_VARIABLE control_rc OUTPUT_VARIABLE control_out ERROR_VARIABLE control_out)
if(NOT control_rc EQUAL 0)
  message(FATAL_ERROR "control build of ${SOURCE} failed; the snippet itself is broken:\n${control_out}")
endif()

execute_process(COMMAND ${CXX} ${flags} ${SOURCE}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
string(REPLACE "\n" " " flat "${out}")
if(NOT flat MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SOURCE} failed to compile, but without the expected message\n  expected: ${EXPECT}\n  got:\n${out}")
endif()
string(REGEX MATCH "error: static assertion failed: [^\n]*" first "${out}")
message(STATUS "compile failed as expected: ${first}")
