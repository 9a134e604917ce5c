#!/usr/bin/env bash
# Builds whale and runs every test: the release suite (GoogleTest + reference comparisons via
# CTest), the same unit tests under AddressSanitizer/UBSan, and the fuzzers for a short time.
# Installs missing Debian packages and the npm reference packages first.
#   WHALE_SKIP_SANITIZE=1  skip the ASan/UBSan build
#   WHALE_FUZZ_SECONDS=N   seconds per fuzzer (default 10; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
if [[ -f tests/js/package.json ]]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
JOBS=${JOBS:-$(nproc)}
# Tests run side by side on every core: OpenMP workers that sleep at once cost least there (a
# spinning worker takes time from the other test). whale's own default is a short spin (README).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

echo "== release build: all tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS" --timeout 900

if [[ "${WHALE_SKIP_SANITIZE:-0}" != 1 ]]; then
  echo "== unit tests under AddressSanitizer + UBSan"
  # -O1 with line tables only (test sources mostly -O0: see CMakeLists.txt): under half the
  # compile time of -O2 -g on 2 cores; ASan reports still name functions and lines. The CLI
  # tests run the release CLI built above (WHALE_TEST_CLI), so this build instruments the
  # library and the tests, not the CLI's CLI11 glue a second time.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
    -DWHALE_SANITIZE=ON -DWHALE_BENCH=OFF -DWHALE_TEST_CLI="$PWD/build/whale" >/dev/null
  ninja -C build-asan -j "$JOBS" whale_tests
  # Most tests run on one thread, so the suite runs as $JOBS GoogleTest shards side by side.
  pids=()
  for ((i = 0; i < JOBS; i++)); do
    OMP_WAIT_POLICY=passive ASAN_OPTIONS=detect_leaks=0 GTEST_TOTAL_SHARDS=$JOBS GTEST_SHARD_INDEX=$i \
      ./build-asan/whale_tests --gtest_brief=1 >"build-asan/shard-$i.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then failed=1; fi
    cat "build-asan/shard-$i.log"
  done
  if ((failed)); then echo "sanitizer suite failed (logs above)"; exit 1; fi
fi

FUZZ_SECONDS=${WHALE_FUZZ_SECONDS:-10}
if [[ "$FUZZ_SECONDS" != 0 ]] && ls tests/fuzz/*.cpp >/dev/null 2>&1; then
  echo "== fuzzing (${FUZZ_SECONDS}s per target)"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWHALE_FUZZ=ON \
    -DWHALE_TESTS=OFF -DWHALE_BENCH=OFF -DWHALE_SANITIZE=ON >/dev/null
  ninja -C build-fuzz -j "$JOBS" fuzzers
  bash tests/fuzz/run_fuzzers.sh build-fuzz "$FUZZ_SECONDS"
fi
