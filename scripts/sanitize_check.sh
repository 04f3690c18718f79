#!/usr/bin/env bash
# The whole CTest suite (unit and end-to-end tests) built with AddressSanitizer,
# LeakSanitizer and UndefinedBehaviorSanitizer (clang), docs/sanitizers.md.
#
#   bash scripts/sanitize_check.sh            configure + build build-sanitize/, run every test
#   SANITIZE_JOBS=2 bash scripts/sanitize_check.sh      parallel build and ctest jobs
#   SANITIZE_CTEST_ARGS="-R model_test" bash scripts/sanitize_check.sh   a subset
#
# Every process a test starts (fedprllm-server, fedprllm-client, the tools) inherits the
# options below, and writes any sanitizer report to $SANITIZE_LOG_DIR/{asan,ubsan}.PID rather
# than to its stderr. A report there fails this script even when the test that started the
# process passed (a daemon killed on purpose, an exit status a test does not look at).
# Exit status: 0 when every test passed and no process wrote a report; 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
start_s=$(date +%s)

bash scripts/install_deps.sh
# clang, its sanitizer and libFuzzer runtimes and its OpenMP, in install_deps.sh's way.
extra=()
for p in clang libclang-rt-dev libomp-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || extra+=("$p")
done
if [ ${#extra[@]} -gt 0 ]; then
  echo "sanitize_check: installing ${extra[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${extra[@]}"
fi

build="${SANITIZE_BUILD_DIR:-build-sanitize}"
jobs="${SANITIZE_JOBS:-$(nproc)}"
export CCACHE_BASEDIR="$root"
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-8G}"
# FEDPRLLM_LIBFUZZER too, so the fuzz targets of this tree (bench/fuzz.sh) share the objects.
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DFEDPRLLM_SANITIZE=ON -DFEDPRLLM_LIBFUZZER=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j"$jobs"
built_s=$(date +%s)

logs="${SANITIZE_LOG_DIR:-$root/$build/sanitizer-logs}"
rm -rf "$logs"
mkdir -p "$logs"
supp="$root/scripts/sanitizers"
# Why each option is set: docs/sanitizers.md, "Options".
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:print_stacktrace=1:\
strict_init_order=1:check_initialization_order=1:alloc_dealloc_mismatch=0:\
log_path=$logs/asan:log_exe_name=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:report_error_type=1:log_path=$logs/ubsan:log_exe_name=1"
# Symbolized frames in the reports.
if command -v llvm-symbolizer >/dev/null; then
  export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer)"
elif [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

ctest_log="$build/sanitize_ctest.log"
set +e
# shellcheck disable=SC2086  # SANITIZE_CTEST_ARGS is a list of ctest arguments
ctest --test-dir "$build" --output-on-failure -j"$jobs" ${SANITIZE_CTEST_ARGS:-} 2>&1 | tee "$ctest_log"
ctest_rc=${PIPESTATUS[0]}
set -e
end_s=$(date +%s)

reports=()
while IFS= read -r -d '' f; do reports+=("$f"); done < <(find "$logs" -type f -print0 | sort -z)
echo
echo "==== sanitize_check summary ===="
summary=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$ctest_log" | tail -1 || true)
echo "ctest: ${summary:-no summary line (ctest exit status $ctest_rc)}"
grep -E "^Total Test time" "$ctest_log" | tail -1 || true
if grep -q "The following tests FAILED" "$ctest_log"; then
  sed -n '/The following tests FAILED/,$p' "$ctest_log" | grep -E "^\s+[0-9]+ - " || true
fi
echo "sanitizer reports written by processes: ${#reports[@]} (in $logs)"
for f in "${reports[@]}"; do
  echo "---- $f"
  head -40 "$f"
done
echo "wall time: build $((built_s - start_s)) s, tests $((end_s - built_s)) s, total $((end_s - start_s)) s"
if [ "$ctest_rc" -ne 0 ] || [ ${#reports[@]} -ne 0 ]; then
  echo "sanitize_check: FAILED" >&2
  exit 1
fi
echo "sanitize_check: OK"
