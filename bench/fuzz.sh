#!/usr/bin/env bash
# Fuzzing campaign over the fuzz/ targets (docs/fuzzing.md): builds the libFuzzer variants in
# build-fuzz/ (clang, AddressSanitizer + UndefinedBehaviorSanitizer), then runs each target on
# a working copy of its seed corpus until a time or execution budget is spent, one target at
# a time, and prints one table row per target. Exits 1 if any target crashed (or leaked,
# timed out, ran out of memory), 2 on a usage or build error.
#
#   bench/fuzz.sh [--seconds N] [--runs N] [--jobs N] [--no-build] [TARGET...]
#
#   --seconds N  per target, libFuzzer's -max_total_time (env FUZZ_SECONDS; default 60)
#   --runs N     per target, libFuzzer's -runs; whichever budget ends first wins
#                (env FUZZ_RUNS; default -1, no limit)
#   --jobs N     parallel libFuzzer processes per target, -jobs=N -workers=N
#                (env FUZZ_JOBS; default 1)
#   --no-build   use the binaries already in build-fuzz/
#   TARGET       names as in fuzz/corpus/ (mask_codec, payload_proto, ...); default: all
#
# New inputs go to build-fuzz/corpus/NAME (kept between runs, seeded from fuzz/corpus/NAME),
# crashes to build-fuzz/crashes/NAME/, logs to build-fuzz/logs/NAME.log; the table is also
# written to build-fuzz/fuzz_summary.md. Extra libFuzzer flags: env FUZZ_FLAGS.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
seconds=${FUZZ_SECONDS:-60}
runs=${FUZZ_RUNS:--1}
jobs=${FUZZ_JOBS:-1}
build=1
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  for d in fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
for t in "${targets[@]}"; do
  if [[ ! -f fuzz/${t}_fuzz.cc ]]; then echo "fuzz.sh: no target $t (fuzz/${t}_fuzz.cc)" >&2; exit 2; fi
done

out=build-fuzz
if [[ $build -eq 1 ]]; then
  export CCACHE_BASEDIR=$repo CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  mkdir -p "$out"
  cmake -S . -B "$out" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DFEDPRLLM_SANITIZE=ON \
    -DFEDPRLLM_LIBFUZZER=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$out/configure.log" 2>&1 \
    || { tail -40 "$out/configure.log" >&2; echo "fuzz.sh: configure failed ($out/configure.log)" >&2; exit 2; }
  bins=()
  for t in "${targets[@]}"; do bins+=("${t}_fuzz"); done
  cmake --build "$out" -j"${BUILD_JOBS:-2}" --target "${bins[@]}" > "$out/build.log" 2>&1 \
    || { tail -40 "$out/build.log" >&2; echo "fuzz.sh: build failed ($out/build.log)" >&2; exit 2; }
fi

mkdir -p "$out/logs"
# libFuzzer finds leaks itself; UBSan reports must stop the run like ASan's.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

rows=()
failed=0
for t in "${targets[@]}"; do
  bin=$repo/$out/fuzz/${t}_fuzz
  [[ -x $bin ]] || { echo "fuzz.sh: $bin not built" >&2; exit 2; }
  corpus=$repo/$out/corpus/$t
  crashes=$repo/$out/crashes/$t
  log=$repo/$out/logs/$t.log
  mkdir -p "$corpus" "$crashes"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  before=$(find "$crashes" -type f | wc -l)
  echo "fuzz.sh: $t: up to ${seconds}s / $runs runs, $jobs job(s); log $log" >&2
  set +e
  if [[ $jobs -gt 1 ]]; then
    # Each job logs to fuzz-N.log in the working directory; their stats are summed below.
    rm -rf "$out/logs/$t.jobs" && mkdir -p "$out/logs/$t.jobs"
    (cd "$out/logs/$t.jobs" && "$bin" -jobs="$jobs" -workers="$jobs" -max_total_time="$seconds" -runs="$runs" \
       -print_final_stats=1 -timeout=30 -artifact_prefix="$crashes/" ${FUZZ_FLAGS:-} "$corpus" > "$log" 2>&1)
    status=$?
    cat "$out/logs/$t.jobs"/fuzz-*.log >> "$log" 2>/dev/null
  else
    "$bin" -max_total_time="$seconds" -runs="$runs" -print_final_stats=1 -timeout=30 \
      -artifact_prefix="$crashes/" ${FUZZ_FLAGS:-} "$corpus" > "$log" 2>&1
    status=$?
  fi
  set -e
  # libFuzzer may print its final stats twice (at a crash, then at exit): take each log's
  # last report, and sum over the jobs' logs.
  stat_logs=("$log")
  if [[ $jobs -gt 1 ]]; then stat_logs=("$out/logs/$t.jobs"/fuzz-*.log); fi
  last_stat() { awk -v k="stat::$1:" '$1 == k {v = $2} END {print v + 0}' "$2"; }
  execs=0 rate=0
  for l in "${stat_logs[@]}"; do
    [[ -f $l ]] || continue
    execs=$((execs + $(last_stat number_of_executed_units "$l")))
    rate=$((rate + $(last_stat average_exec_per_sec "$l")))
  done
  new_crashes=$(( $(find "$crashes" -type f | wc -l) - before ))
  if [[ $status -ne 0 && $new_crashes -eq 0 ]]; then new_crashes=1; fi  # died without an artifact
  [[ $new_crashes -gt 0 ]] && failed=1
  files=$(find "$corpus" -type f | wc -l)
  bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  rows+=("| $t | $execs | $new_crashes | $files | $bytes | $rate |")
  if [[ $new_crashes -gt 0 ]]; then
    echo "fuzz.sh: $t: crashed (exit $status); artifacts in $crashes, log $log" >&2
    grep -m3 -E "ERROR: |runtime error|SUMMARY" "$log" >&2 || true
  fi
done

{
  echo "| target | executions | crashes | corpus files | corpus bytes | exec/s |"
  echo "|---|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
} | tee "$out/fuzz_summary.md"
exit $failed
