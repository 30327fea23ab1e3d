#!/usr/bin/env bash
# scripts/gpu-run.sh (the GPU bundle's run.sh) with stand-in tests, on any machine: its
# verdicts and exit status. No GPU must never read as passed.
#
#   tests/scripts/gpu_run_test.sh <repo> <work dir>
set -uo pipefail
repo=$1 work=$2
for tool in pkill ps setsid timeout; do
  command -v $tool > /dev/null || { echo "gpu_run_test: skipped: no $tool (procps, util-linux, coreutils)"; exit 77; }
done
rm -rf "$work" && mkdir -p "$work"
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAILED: $1"; fail=1; fi; }

# A bundle of two stand-in tests; fake nvidia-smi and compute-sanitizer on the PATH.
make_bundle() {  # <dir> <exit status of test_b>
  mkdir -p "$1/tests" "$1/bin"
  cp "$repo/scripts/gpu-run.sh" "$1/run.sh"
  printf 'abc1234\n2026-11-29 stand-in\n' > "$1/COMMIT"
  printf '#!/bin/sh\necho "test_a: 3 checks passed"\n' > "$1/tests/test_a"
  printf '#!/bin/sh\n[ "%s" = 77 ] && echo "test_b: skipped: no CUDA device"\nexit %s\n' "$2" "$2" > "$1/tests/test_b"
  printf '#!/bin/sh\nexit 0\n' > "$1/bin/compute-sanitizer"
  chmod +x "$1/run.sh" "$1/tests/test_a" "$1/tests/test_b" "$1/bin/compute-sanitizer"
}
fake_gpu() {  # <bin dir>: nvidia-smi that lists one GPU
  printf '#!/bin/sh\ncase "$1" in -L) echo "GPU 0: Stand-in (UUID: GPU-0)";; *) echo "Stand-in, 1.0, 1 MiB, 1 MHz";; esac\n' > "$1/nvidia-smi"
  chmod +x "$1/nvidia-smi"
}
run_bundle() {  # <dir>: run.sh's exit status; its report in <dir>/report.txt
  PATH="$1/bin:/usr/bin:/bin" CTDL_MEMCHECK_SKIP="test_a test_b" CTDL_GPU_CHECK_BUDGET_S=60 \
    "$1/run.sh" "$1/report.txt" > "$1/stdout.txt" 2>&1
}

# 1. No GPU (an nvidia-smi that finds none, as on a machine with a driver and no device,
# standing in for a real one too): the tests skip; nothing was checked on a GPU, so not 0 (4).
make_bundle "$work/none" 77
printf '#!/bin/sh\necho "No devices were found"\nexit 6\n' > "$work/none/bin/nvidia-smi"
chmod +x "$work/none/bin/nvidia-smi"
run_bundle "$work/none"; rc=$?
check "no GPU: exit 4 (got $rc)" '[ $rc -eq 4 ]'
check "no GPU: test_b's verdict is SKIP" 'grep -q "^SKIP .*test test_b" "$work/none/report.txt"'
check "no GPU: the report says nothing was checked on a GPU" \
  'tail -1 "$work/none/report.txt" | grep -q "nothing was checked on a GPU"'

# 2. A GPU, and a test that skips anyway (no device found by CUDA): FAIL(skip), exit 1.
make_bundle "$work/skip" 77
fake_gpu "$work/skip/bin"
run_bundle "$work/skip"; rc=$?
check "GPU, a test skips: exit 1 (got $rc)" '[ $rc -eq 1 ]'
check "GPU, a test skips: its verdict is FAIL(skip)" 'grep -q "^FAIL(skip) .*test test_b" "$work/skip/report.txt"'
check "GPU: test_a's verdict is PASS" 'grep -q "^PASS .*test test_a" "$work/skip/report.txt"'

# 3. A GPU and a failing test: exit 1.
make_bundle "$work/fail" 1
fake_gpu "$work/fail/bin"
run_bundle "$work/fail"; rc=$?
check "GPU, a test fails: exit 1 (got $rc)" '[ $rc -eq 1 ]'
check "GPU, a test fails: its verdict is FAIL" 'grep -q "^FAIL .*test test_b" "$work/fail/report.txt"'

# 4. A GPU and every test passing: exit 0.
make_bundle "$work/pass" 0
fake_gpu "$work/pass/bin"
run_bundle "$work/pass"; rc=$?
check "GPU, all pass: exit 0 (got $rc)" '[ $rc -eq 0 ]'

# 5. A bundle whose path holds regular-expression metacharacters: a step's leftover
# process is still killed before the next step (sweep). test_a leaves a sleeper behind.
odd="$work/a+b(c)"
make_bundle "$odd" 0
fake_gpu "$odd/bin"
mkdir -p "$odd/programs" && cp /bin/sleep "$odd/programs/sleeper"
printf '#!/bin/sh\nsetsid "%s/programs/sleeper" 300 < /dev/null > /dev/null 2>&1 &\necho $! > "%s/sleeper.pid"\necho "test_a: 3 checks passed"\n' \
  "$odd" "$odd" > "$odd/tests/test_a"
run_bundle "$odd"; rc=$?
check "odd path: exit 0 (got $rc)" '[ $rc -eq 0 ]'
sleeper=$(cat "$odd/sleeper.pid" 2> /dev/null || echo 0)
check "odd path: the step's leftover process was started" '[ "$sleeper" -gt 0 ]'
# (killed: gone, or a zombie that nobody has reaped yet)
check "odd path: the leftover process was killed" \
  '! kill -0 "$sleeper" 2> /dev/null || [ "$(ps -o stat= -p "$sleeper" | cut -c1)" = Z ]'
[ "$sleeper" -gt 0 ] && kill "$sleeper" 2> /dev/null

[ $fail -eq 0 ] && echo "gpu_run_test: all checks passed"
exit $fail
