# The matmul tests built and run against oneDNN 3.x (ctdl's own build uses whichever
# oneDNN find_package(dnnl) finds; Debian 12's is 2.6). Run by CTest as `cmake -P`:
#   SOURCE_DIR  the project      WORK_DIR  scratch directory (oneDNN prefix + build)
#   PYTHON      a python3 with pip   OPTIONS  ;-list of -D options   TARGETS  test targets
#
# oneDNN comes from PyPI, pinned by version and sha256: onednn-devel-cpu-gomp (headers and
# CMake config) and onednn-cpu-gomp (libdnnl.so.3), oneDNN 3.2.0 built for GNU OpenMP
# like ctdl, CPU only, so its dnnl-config.cmake needs neither OpenCL nor TBB nor SYCL.
# (The newer `onednn-devel` wheels, 2024.0 onwards, are the SYCL/DPC++ build: they pull
# in Intel's compiler and OpenCL runtimes, 2 GB for 2026.1.0, and ship no dnnl CMake
# config; 2024.0.0's holds no headers.)
# The wheels are fetched with `pip download` (no virtual environment or system install:
# Debian 12's pip refuses installs outside a venv, and venvs need python3-venv) and
# unpacked into WORK_DIR/onednn; the inner configure gets -Ddnnl_DIR pointing there, and
# CMake's build-tree RUNPATH makes the test programs load that libdnnl.so.3 (checked).
# Skipped (exit 77 from CMake 3.29, else the message "variant/onednn3 skipped: PyPI cannot
# be reached", which the test's SKIP_REGULAR_EXPRESSION matches) only when PyPI cannot be
# reached; anything else that goes wrong fails.

set(onednn_version 2023.2.0)  # the PyPI release; oneDNN 3.2.0
set(onednn_wheels
    "onednn-devel-cpu-gomp==${onednn_version} --hash=sha256:9763c69e8c907e119056bd52ad918ca84ac9ba939d130a99dfa95ccca3e5e284"
    "onednn-cpu-gomp==${onednn_version} --hash=sha256:2f22a54d6a890ed14bfa185d42a4be65d8b5b1df85dc1f0f3a9abe31620416fb")
set(prefix ${WORK_DIR}/onednn)
set(stamp ${prefix}/ctdl-onednn-${onednn_version}.stamp)

if(NOT EXISTS ${stamp})
  if(NOT PYTHON)
    message(FATAL_ERROR "variant/onednn3: no python3 found at configure time; it fetches oneDNN 3.x from PyPI with "
                        "`python3 -m pip download` (Debian: apt install python3 python3-pip)")
  endif()
  set(wheels ${WORK_DIR}/wheels)
  file(REMOVE_RECURSE ${prefix} ${wheels})
  file(MAKE_DIRECTORY ${wheels})
  string(REPLACE ";" "\n" requirements "${onednn_wheels}")
  file(WRITE ${wheels}/requirements.txt "${requirements}\n")
  execute_process(COMMAND ${PYTHON} -m pip download --disable-pip-version-check --no-deps --only-binary=:all:
                          --require-hashes --retries 1 --timeout 20 -r ${wheels}/requirements.txt -d ${wheels}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    # pip says "No matching distribution" after failed connections too, so the
    # connection errors are what tell an unreachable PyPI from a real failure. A TLS
    # certificate this machine does not trust (an intercepting proxy whose CA is not
    # installed) counts as unreachable: nothing trustworthy can be fetched.
    if(out MATCHES "SSLError|CERTIFICATE_VERIFY_FAILED|NewConnectionError|Failed to establish|Temporary failure in name resolution|Name or service not known|Network is unreachable|ConnectTimeout|ReadTimeout|timed out|ProxyError|No route to host|Connection refused")
      set(why "variant/onednn3 skipped: PyPI cannot be reached to fetch oneDNN ${onednn_version} (pip download failed)")
      if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.29)
        message("${why}:\n${out}")
        cmake_language(EXIT 77)  # SKIP_RETURN_CODE
      endif()
      message(FATAL_ERROR "${why}:\n${out}")  # SKIP_REGULAR_EXPRESSION (no EXIT before CMake 3.29)
    endif()
    message(FATAL_ERROR "variant/onednn3: `pip download` of oneDNN 3.x (${onednn_wheels}) failed "
                        "(no pip? run `python3 -m pip --version`):\n${out}")
  endif()
  # A wheel is a zip; its files for the prefix lie under <name>-<version>.data/data/.
  file(GLOB files ${wheels}/*.whl)
  list(LENGTH files count)
  if(NOT count EQUAL 2)
    message(FATAL_ERROR "variant/onednn3: expected 2 wheels in ${wheels}, found ${count}: ${files}")
  endif()
  set(unpacked ${WORK_DIR}/unpacked)
  file(REMOVE_RECURSE ${unpacked})
  file(MAKE_DIRECTORY ${unpacked})
  foreach(whl IN LISTS files)
    execute_process(COMMAND ${CMAKE_COMMAND} -E tar xf ${whl} WORKING_DIRECTORY ${unpacked}
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "variant/onednn3: unpacking ${whl} failed:\n${out}")
    endif()
  endforeach()
  file(GLOB data_dirs ${unpacked}/*.data/data)
  foreach(dir IN LISTS data_dirs)
    file(GLOB entries ${dir}/*)
    file(COPY ${entries} DESTINATION ${prefix})
  endforeach()
  file(REMOVE_RECURSE ${unpacked} ${wheels})
  # The wheel carries libdnnl.so, .so.3 and .so.3.2 as three 55 MB copies: keep the one the
  # CMake config names and the soname the programs load, as a link.
  file(REMOVE ${prefix}/lib/libdnnl.so ${prefix}/lib/libdnnl.so.3)
  file(CREATE_LINK libdnnl.so.3.2 ${prefix}/lib/libdnnl.so.3 SYMBOLIC)
  foreach(f lib/cmake/dnnl/dnnl-config.cmake include/oneapi/dnnl/dnnl.hpp lib/libdnnl.so.3)
    if(NOT EXISTS ${prefix}/${f})
      message(FATAL_ERROR "variant/onednn3: ${prefix}/${f} missing after unpacking the oneDNN ${onednn_version} wheels")
    endif()
  endforeach()
  file(WRITE ${stamp} "${onednn_wheels}\n")
endif()

list(APPEND OPTIONS -Ddnnl_DIR=${prefix}/lib/cmake/dnnl)
set(WORK_DIR ${WORK_DIR}/build)
include(${CMAKE_CURRENT_LIST_DIR}/variant_build_test.cmake)

# The tests passed; make sure it was 3.x they ran against, not a system oneDNN.
foreach(t IN LISTS TARGETS)
  execute_process(COMMAND ldd ${WORK_DIR}/tests/${t} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  string(REGEX MATCH "libdnnl[^\n]*" loaded "${out}")
  string(FIND "${loaded}" "libdnnl.so.3 => ${prefix}/lib/libdnnl.so.3" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "variant/onednn3: ${t} does not load ${prefix}/lib/libdnnl.so.3 (ldd: '${loaded}')")
  endif()
endforeach()
message(STATUS "variant/onednn3: ${TARGETS} passed against oneDNN ${onednn_version} (3.x) from ${prefix}")
