# Installs the build tree into a scratch prefix, then uses it as a user would:
#  1. the consumer project in tests/consumer with find_package(ctdl CONFIG REQUIRED)
#     (and, in a build with NCCL, its NcclComm program through ctdl::nccl);
#  2. the same main.cpp compiled with the flags of `pkg-config --cflags --libs ctdl`;
#  3. the installed programs (bin/ner_span_classifier, bin/ctdl-tokenize) run;
#  4. find_package(ctdl CONFIG QUIET) in tests/consumer/quiet with a dependency hidden
#     (utf8proc; OpenCL when oneDNN's config needs it): the configure must still succeed,
#     saying what is missing.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
macro(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGV}\n${out}")
  endif()
endmacro()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# 1. CMake
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)
message(STATUS "consumer (find_package) output: ${out}")
if(NOT out MATCHES "consumer ok")
  message(FATAL_ERROR "the consumer ran but did not print 'consumer ok':\n${out}")
endif()

# ctdl::nccl: a build with NCCL installs it, and the consumer's NcclComm program builds
# and runs (it runs an all-reduce only where a GPU is).
if(WITH_NCCL)
  if(NOT EXISTS ${WORK_DIR}/build/consumer_nccl)
    message(FATAL_ERROR "this ctdl was built with NCCL, but the installed package gave the consumer no ctdl::nccl")
  endif()
  run(${WORK_DIR}/build/consumer_nccl)
  message(STATUS "consumer_nccl output: ${out}")
  if(NOT out MATCHES "consumer_nccl: ok")
    message(FATAL_ERROR "consumer_nccl did not print 'consumer_nccl: ok':\n${out}")
  endif()
endif()

# 2. pkg-config
set(ENV{PKG_CONFIG_PATH} ${prefix}/share/pkgconfig)
run(pkg-config --cflags --libs ctdl)
string(STRIP "${out}" pc_flags)
message(STATUS "pkg-config --cflags --libs ctdl: ${pc_flags}")
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run(${CXX} -O1 ${CONSUMER_SOURCE}/main.cpp -o ${WORK_DIR}/consumer_pc ${pc_flags})
run(${WORK_DIR}/consumer_pc)
if(NOT out MATCHES "consumer ok")
  message(FATAL_ERROR "the pkg-config consumer ran but did not print 'consumer ok':\n${out}")
endif()
unset(ENV{PKG_CONFIG_PATH})

# 3. the installed programs
foreach(program ner_span_classifier ctdl-tokenize)
  if(NOT EXISTS ${prefix}/bin/${program})
    message(FATAL_ERROR "cmake --install did not install bin/${program}")
  endif()
  run(${prefix}/bin/${program} --help)
endforeach()

# 4. an optional ctdl with a dependency missing
macro(expect_quiet label regex)
  file(REMOVE_RECURSE ${WORK_DIR}/quiet)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "find_package(ctdl CONFIG QUIET) with ${label} missing aborted the configure:\n${out}")
  endif()
  if(NOT out MATCHES "${regex}")
    message(FATAL_ERROR "with ${label} missing, expected '${regex}' in:\n${out}")
  endif()
  string(REGEX MATCH "optional ctdl:[^\n]*" said "${out}")
  message(STATUS "${label} hidden: ${said}")
endmacro()
set(quiet_cfg ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE}/quiet -B ${WORK_DIR}/quiet
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX})
expect_quiet("nothing" "optional ctdl: found" ${quiet_cfg})
expect_quiet("utf8proc" "optional ctdl: not found .ctdl needs utf8proc"
             PKG_CONFIG_LIBDIR=${WORK_DIR}/no-pkgconfig ${quiet_cfg})
if(DNNL_NEEDS_OPENCL)
  expect_quiet("OpenCL" "optional ctdl: not found .ctdl needs OpenCL"
               ${quiet_cfg} -DCMAKE_DISABLE_FIND_PACKAGE_OpenCL=ON)
endif()
