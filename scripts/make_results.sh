#!/usr/bin/env bash
# Regenerates docs/results.md, docs/results.csv and docs/sparsity_sweep.png from scratch:
# FedPrLLM's comparison table (issue 15) on stories260K and babyllama-1M.
#
#   scripts/make_results.sh                    # from the repository root; builds in build/
#   BUILD=build-eval JOBS=2 scripts/make_results.sh
#
# Settings (each overridable from the environment):
#   EVAL_WINDOWS   windows of 256 tokens scored per text in the capped cells (default 128;
#                  0 = whole texts everywhere). Headline rows are always scored on whole texts.
#   LOCAL_CLIENTS  local-only cells evaluate this many clients per (client count, run) (default 2)
#   JOBS           sim processes at once, each single-threaded (default 2, one per core)
#   FULL_RUNS      the runs whose headline rows are also scored on whole texts (default: every
#                  table run but the split-only one)
#   STORIES_ONLY=1 skips babyllama-1M
#   WORK=DIR       keep every run's output in DIR (default: a temporary directory, removed)
#   ASSEMBLE_ONLY=1  with WORK: run nothing, write the docs from the runs DIR holds (a partial
#                  table when some are missing; the header lists the runs present)
#   SMOKE=1        a quick check of the script itself: 16 windows, 8 and 16 clients, 2 eval windows,
#                  no whole texts (the numbers mean nothing)
#
# The table is cut into independent fedprllm-sim runs (a calibration set x pattern each), run
# JOBS at a time; each caches its evaluations by the pruned model's SHA-256. Stories260K:
# TinyStories and C4 calibration, 8/16/64 clients, 50% and 2:4, 70% at 64 clients; runs vary
# the calibration draw (seeds 0,1,2, split seed 0), and one extra section varies the client
# split alone (split seeds 0,1,2, draw seed 0). babyllama-1M: the headline rows (and their scaled one-shot rows) at 64 clients
# and 50%, TinyStories calibration.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${DATA:-$ROOT/../shared/data}"
BUILD="${BUILD:-$ROOT/build}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
EVAL_WINDOWS="${EVAL_WINDOWS:-128}"
LOCAL_CLIENTS="${LOCAL_CLIENTS:-2}"
JOBS="${JOBS:-2}"
STORIES_ONLY="${STORIES_ONLY:-0}"
FULL_RUNS="${FULL_RUNS:-b1m-ts-50 s260-ts-50 s260-ts-24 s260-c4-50 s260-c4-24 s260-ts-70 s260-c4-70}"
NSAMPLES=128 CLIENT_COUNTS=64,8,16 HEADLINE=64
if [ "${SMOKE:-0}" = 1 ]; then
  NSAMPLES=16 CLIENT_COUNTS=16,8 HEADLINE=16 EVAL_WINDOWS=2 FULL_RUNS=""
fi

command -v gnuplot >/dev/null || { echo "make_results.sh: gnuplot is required (apt-get install gnuplot-nox)" >&2; exit 1; }
cmake -S "$ROOT" -B "$BUILD" >/dev/null
cmake --build "$BUILD" --target fedprllm-sim -j"$JOBS"
SIM="$BUILD/tools/fedprllm-sim"

if [ -n "${WORK:-}" ]; then
  TMP="$WORK"
  mkdir -p "$TMP"
else
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
fi
head -n 1000 "$DATA/c4/c4.jsonl" > "$TMP/c4_calib.jsonl"
tail -n 480 "$DATA/c4/c4.jsonl" > "$TMP/c4_eval.jsonl"

TS="$DATA/tinystories/tinystories_val.txt"
CAL_TS="tinystories=$TS@second-half"
CAL_C4="c4=$TMP/c4_calib.jsonl:prefix+gold_completion"
EVALS="tinystories=$TS@first-half,wikitext2=$DATA/wikitext-2-raw/wiki.test.raw,c4=$TMP/c4_eval.jsonl:prefix+gold_completion"
S260="--model $ROOT/models/stories260K/stories260K.bin"
B1M="--model $DATA/babyllama-1M/model5000.bin --tokenizer $DATA/babyllama-1M/tok105.model"
# Every run shares one evaluation cache: dense and magnitude, the same model in every run of a
# model, are scored once.
COMMON="--eval $EVALS --nsamples $NSAMPLES --seqlen 256 --eval_seqlen 256 --eval_max_windows $EVAL_WINDOWS
  --local_only_max_clients $LOCAL_CLIENTS --headline_clients $HEADLINE --full_local_only_clients 1 --jobs 1
  --eval_cache $TMP/eval-cache"
# Whole texts: the headline one-shot rows with the index tie-break (FedPrLLM's rule); the
# reference's run also with the magnitude tie-break and the column group.
FULL_INDEX="--full_headline_tie_breaks index"
FULL="--strategies one-shot,iterative,exact --tie_breaks magnitude,random,index"
DRAW="--seeds 0,1,2 --split_seeds 0"

# One line per run: NAME|ARGS. The reference cells, babyllama-1M (the longest run) and the plot
# first, so that a run cut short still holds them; then the largest first.
{
  if [ "$STORIES_ONLY" != 1 ]; then
    echo "b1m-ts-50|$B1M --calib $CAL_TS --clients $HEADLINE --patterns unstructured --sparsity 0.5 --groups layer,row \
--scaling no,yes --strategies one-shot,iterative,exact --tie_breaks magnitude,index $DRAW $FULL_INDEX"
  fi
  echo "s260-ts-50|$S260 --calib $CAL_TS --clients $CLIENT_COUNTS --patterns unstructured --sparsity 0.5 $FULL $DRAW \
--full_headline_groups layer,column"
  echo "s260-ts-24|$S260 --calib $CAL_TS --clients $CLIENT_COUNTS --patterns 2:4 $FULL $DRAW $FULL_INDEX"
  echo "sweep-s260|$S260 --calib $CAL_TS --clients $HEADLINE --seeds 0 --table=false --sweep --model_name stories260K"
  if [ "$STORIES_ONLY" != 1 ]; then
    echo "sweep-b1m|$B1M --calib $CAL_TS --clients $HEADLINE --seeds 0 --table=false --sweep --model_name babyllama-1M"
  fi
  echo "s260-c4-50|$S260 --calib $CAL_C4 --clients $CLIENT_COUNTS --patterns unstructured --sparsity 0.5 $FULL $DRAW $FULL_INDEX"
  echo "s260-c4-24|$S260 --calib $CAL_C4 --clients $CLIENT_COUNTS --patterns 2:4 $FULL $DRAW $FULL_INDEX"
  echo "s260-ts-70|$S260 --calib $CAL_TS --clients $HEADLINE --patterns unstructured --sparsity 0.7 $FULL $DRAW $FULL_INDEX"
  echo "s260-c4-70|$S260 --calib $CAL_C4 --clients $HEADLINE --patterns unstructured --sparsity 0.7 $FULL $DRAW $FULL_INDEX"
  echo "s260-ts-50-split|$S260 --calib $CAL_TS --clients $HEADLINE --patterns unstructured --sparsity 0.5 --groups layer,row,column \
--strategies one-shot --tie_breaks magnitude,index --seeds 0 --split_seeds 0,1,2"
} > "$TMP/runs.txt"

run_one() {  # NAME|ARGS -> $TMP/NAME/ (log in $TMP/NAME.log)
  local name="${1%%|*}" args="${1#*|}" t0 full="--full_headline=false"
  case " $FULL_RUNS " in *" $name "*) full="--full_headline=true" ;; esac
  t0=$(date +%s)
  # shellcheck disable=SC2086
  if ! OMP_NUM_THREADS=1 "$SIM" $args $COMMON $full --out "$TMP/$name" > "$TMP/$name.log" 2>&1; then
    echo "make_results.sh: run $name failed:" >&2
    tail -20 "$TMP/$name.log" >&2
    return 1
  fi
  echo "$name $(( $(date +%s) - t0 ))" >> "$TMP/times.txt"
  echo "make_results.sh: $name done in $(( $(date +%s) - t0 )) s"
}
export -f run_one
export SIM TMP COMMON FULL_RUNS

if [ "${ASSEMBLE_ONLY:-0}" != 1 ]; then
  rm -rf "$TMP/times.txt" "$TMP/seconds.txt" "$TMP/eval-cache"
  start=$(date +%s)
  tr '\n' '\0' < "$TMP/runs.txt" | xargs -0 -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {} ||
    echo "make_results.sh: some runs failed; the table lists them as missing" >&2
  echo "$(( $(date +%s) - start ))" > "$TMP/seconds.txt"
fi
seconds=$(cat "$TMP/seconds.txt" 2>/dev/null || echo "(unfinished)")
present=$(cut -d' ' -f1 "$TMP/times.txt" 2>/dev/null | sort | tr '\n' ' ')
missing=""
while IFS='|' read -r name _; do
  case " $present " in *" $name "*) ;; *) missing="$missing $name" ;; esac
done < "$TMP/runs.txt"

shopt -s nullglob
evaluations=0 requests=0
for stats in "$TMP"/*/stats.txt; do
  evaluations=$(( evaluations + $(awk '$1 == "evaluations" {print $2}' "$stats") ))
  requests=$(( requests + $(awk '$1 == "requests" {print $2}' "$stats") ))
done
hit_rate=$(awk -v e="$evaluations" -v r="$requests" 'BEGIN { printf "%.1f", (r > 0 ? 100 * (r - e) / r : 0) }')

# results.csv: every table run's rows, with a model and run column.
{
  echo "model,run,calibration,pattern,clients,method,strategy,group,scaling,tie_break,eval,windows,mean,min,max,runs"
  for dir in "$TMP"/*/; do
    name="$(basename "$dir")"
    [ -f "$dir/results.csv" ] || continue
    case "$name" in b1m-*) model=babyllama-1M ;; *) model=stories260K ;; esac
    tail -n +2 "$dir/results.csv" | sed "s|^|$model,$name,|"
  done
} > "$TMP/results.csv"

# The plot: perplexity vs unstructured sparsity, one panel per model (the sweeps' .dat files).
PLOT_MODELS="stories260K:sweep-s260"
[ "$STORIES_ONLY" = 1 ] || PLOT_MODELS="$PLOT_MODELS babyllama-1M:sweep-b1m"
panels=$(echo "$PLOT_MODELS" | wc -w)
{
  echo "set terminal pngcairo size $(( 700 * panels )),560 enhanced font 'DejaVu Sans,11'"
  echo "set output '$TMP/sparsity_sweep.png'"
  echo "set multiplot layout 1,$panels"
  echo "set xlabel 'unstructured sparsity'; set ylabel 'perplexity, tinystories held out (log scale)'"
  echo "set logscale y; set grid; set key top left"
  for entry in $PLOT_MODELS; do
    dat="$TMP/${entry#*:}/sparsity_sweep.dat"
    [ -f "$dat" ] || continue
    echo "set title '${entry%%:*}: ${HEADLINE} clients, TinyStories calibration, seed 0'"
    echo "plot '$dat' using 1:2 with linespoints lw 2 title 'magnitude (per matrix)', \\"
    echo "     '' using 1:3 with linespoints lw 2 title 'centralized Wanda', \\"
    echo "     '' using 1:4 with linespoints lw 2 title 'FedPrLLM one-shot, layer, no scaling', \\"
    echo "     '' using 1:5 with linespoints lw 2 title 'local-only (mean over clients)'"
  done
  echo "unset multiplot"
} > "$TMP/sparsity_sweep.gp"
gnuplot "$TMP/sparsity_sweep.gp"

# A cell of results.csv: mean [min, max] of model/run/calibration/pattern/clients/method/
# strategy/group/scaling/tie/eval on the most windows the run scored that text on.
cell() {
  awk -F, -v m="$1" -v r="$2" -v cal="$3" -v pat="$4" -v cl="$5" -v me="$6" -v st="$7" -v gr="$8" -v sc="$9" \
      -v ti="${10}" -v ev="${11}" '
    $1 == m && $2 == r && $3 == cal && $4 == pat && $5 == cl && $6 == me && $7 == st && $8 == gr && $9 == sc &&
    $10 == ti && $11 == ev && $12 + 0 > best { best = $12 + 0; v = sprintf("%.2f [%.2f, %.2f]", $13, $14, $15); w = $12 }
    END { if (v == "") print "—"; else printf "%s (%d windows)", v, w }' "$TMP/results.csv"
}
ref_row() {  # LABEL REFERENCE CELL-ARGS...
  local label="$1" ref="$2"
  shift 2
  echo "| $label | $ref | $(cell "$@") |"
}

# The headline questions on both models, from results.csv: per eval text, centralized Wanda,
# one-shot layer without scaling (index tie-break, FedPrLLM's rule) and local-only at
# $HEADLINE clients, each on the most windows it was scored on; the gap to centralized with
# both cells' seed spreads (half the range over runs), and whether the one-shot mean is below
# the local-only mean and below every local-only run.
both_models() {
  awk -F, -v hc="$HEADLINE" '
    function key(m, e) { return m SUBSEP e }
    function take(arr, k) {
      if (!((k, "w") in arr) || $12 + 0 > arr[k, "w"]) {
        arr[k, "w"] = $12 + 0; arr[k, "mean"] = $13; arr[k, "min"] = $14; arr[k, "max"] = $15
      }
    }
    NR > 1 && $3 == "tinystories" && $4 == "unstructured 50%" && ($2 == "s260-ts-50" || $2 == "b1m-ts-50") {
      k = key($1, $11)
      if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      if ($6 == "centralized-wanda") take(cen, k)
      if ($6 == "local-only" && $5 == hc) take(loc, k)
      if ($6 == "fedprllm" && $7 == "one-shot" && $8 == "layer" && $9 == "no" && $10 == "index" && $5 == hc) take(fed, k)
    }
    END {
      print "| Model | Eval | Centralized Wanda | One-shot layer, no scaling, tie index | Gap (spreads) | Local-only | Below local-only mean / every run |"
      print "|---|---|---|---|---|---|---|"
      for (i = 1; i <= n; ++i) {
        k = order[i]; split(k, parts, SUBSEP)
        if (!((k, "w") in cen) || !((k, "w") in fed) || !((k, "w") in loc)) continue
        gap = fed[k, "mean"] / cen[k, "mean"] - 1
        sf = (fed[k, "max"] - fed[k, "min"]) / (2 * fed[k, "mean"])
        sc = (cen[k, "max"] - cen[k, "min"]) / (2 * cen[k, "mean"])
        within[parts[1]] += (gap <= 0.01 && gap >= -0.01); cells[parts[1]]++
        below = fed[k, "mean"] < loc[k, "mean"]; all = fed[k, "max"] < loc[k, "min"]
        beats[parts[1]] += below; beats_all[parts[1]] += all
        printf "| %s | %s | %.2f [%.2f, %.2f] (%d w) | %.2f [%.2f, %.2f] (%d w) | %+.1f%% (±%.1f%%, ±%.1f%%) | %.2f [%.2f, %.2f] (%d w) | %s / %s |\n",
          parts[1], parts[2], cen[k, "mean"], cen[k, "min"], cen[k, "max"], cen[k, "w"],
          fed[k, "mean"], fed[k, "min"], fed[k, "max"], fed[k, "w"], 100 * gap, 100 * sf, 100 * sc,
          loc[k, "mean"], loc[k, "min"], loc[k, "max"], loc[k, "w"], (below ? "yes" : "no"), (all ? "yes" : "no")
      }
      print ""
      for (m in cells) {
        printf "- %s: one-shot layer (no scaling, index tie-break) within 1%% of centralized Wanda in %d of %d texts; below the local-only mean in %d, below every local-only run in %d.\n",
          m, within[m], cells[m], beats[m], beats_all[m]
      }
      print "- (w = windows per text the cell was scored on; spreads are of the one-shot and the centralized cell.) Where weight scaling helps is in the findings of each run below (both models have scaled rows)."
    }' "$TMP/results.csv"
}

cp "$TMP/results.csv" "$ROOT/docs/results.csv"
cp "$TMP/sparsity_sweep.png" "$ROOT/docs/sparsity_sweep.png"
{
  cat <<HEADER
# FedPrLLM quality table: stories260K and babyllama-1M

Generated by \`scripts/make_results.sh\` (fedprllm-sim) in ${seconds} s on $(nproc) CPU cores
($(wc -l < "$TMP/runs.txt") runs, ${JOBS} at a time, one thread each). Do not edit by hand: rerun the script.
${missing:+**Partial table: the runs${missing} did not finish and are missing.**}
**${evaluations} evaluations** (a model scored on every text, on the capped windows or on the whole
texts) for ${requests} cells asked for; a cell whose pruned model is bit-identical to one already
scored on the same windows, in its run or another (same SHA-256 of every tensor; one cache shared
by the runs), reuses that evaluation: **cache hit rate ${hit_rate}%**.
Per-run times: $(sort "$TMP/times.txt" | awk '{printf "%s%s %d s", (NR > 1 ? ", " : ""), $1, $2}').

- **Models:** stories260K (llama2.c, dim 64, 5 layers, 512-piece tokenizer) and babyllama-1M
  (dim 128, 5 layers, a 105-character tokenizer without byte fallback, so a newline is \`<unk>\`),
  float32, CPU.
- **Calibration:** ${NSAMPLES} windows x 256 tokens per run, from the second half of \`tinystories_val.txt\`
  (the split of \`docs/calibration_data.md\` §9: the halves meet at the first blank line at or after
  the middle character), or from the first 1000 records of \`c4.jsonl\` (prefix + gold_completion).
  Even split: the windows are shuffled with the split seed and dealt ${NSAMPLES}/C to each of C clients.
  Clients compute Wanda masks (row group, sequential) on their own windows; the server aggregates
  votes. Exact rows send no masks: the sites' float64 column statistics are pooled per layer and
  the server scores like centralized Wanda (row group). What a site sends per decoder layer
  (docs/round_protocol.md §4): stories260K 2,920 bytes against 5,664 bytes of 1-bit masks
  (45,312 weights); babyllama-1M 5,896 bytes against 23,040 (184,320 weights); LLaMA-7B 186,376 bytes against
  25,296,896 (0.0074x). With secure aggregation the masked vector is the same size in 64-bit
  fixed point (docs/secure_aggregation.md).
- **Runs and ranges:** cells are "mean [min, max]" over three runs. In every section but one the
  runs vary **the calibration draw only** (draw seeds 0, 1, 2; client split and random tie-break
  seed 0). The section "split only" varies **the client split only** (split seeds 0, 1, 2; draw
  seed 0), so the two kinds of spread can be told apart. Local-only cells are over the first
  ${LOCAL_CLIENTS} clients x 3 runs. Dense and magnitude do not depend on the runs.
- **Perplexity columns:** tinystories = first half of \`tinystories_val.txt\` (held out); wikitext2 =
  \`wikitext-2-raw/wiki.test.raw\` (CRLF read as LF); c4 = the last 480 \`c4.jsonl\` records (disjoint
  from the calibration records). Windows of 256 tokens, non-overlapping.
  - **Whole texts** for the headline rows (dense, magnitude per matrix, centralized, local-only (its
    first client per run), and one-shot layer without scaling at ${HEADLINE} clients with the
    index tie-break; in s260-ts-50 also the magnitude tie-break and the column group) in the runs
    ${FULL_RUNS:-(none)}: every window of each text; each run's table lists the window counts
    (stories260K: 5,277 windows over the three texts, 41 times a capped evaluation).
  - **Capped** everywhere else (and for the headline rows too, in the main sections, so every row of
    a section is comparable): the first ${EVAL_WINDOWS} windows of each text, the same windows for
    every cell.
- **Baselines:** magnitude per matrix (Wanda's baseline) and, unstructured, per row. **Tie-breaks:**
  magnitude (smaller |W| first), random (seeded) and index (the lower flat index first, FedPrLLM's
  stable-sort rule).
- **N:M:** the comparison group does not apply to 2:4 (every run of 4 keeps 2), so one row
  "any (N:M)" stands for layer, row and column.
- **Plot:** \`sparsity_sweep.png\`, unstructured sparsity 0.1 to 0.8, TinyStories calibration, ${HEADLINE}
  clients, seed 0, tinystories held-out perplexity on the capped windows (local-only: mean over the
  first ${LOCAL_CLIENTS} clients; magnitude per matrix).

## Against the independent reference (stories260K, TinyStories calibration, 50% unless stated)

The reference's figures are from issue 15 (its full evaluation); ours are read from this run's
results.csv, on the most windows the cell was scored on.

| Cell | Reference | This table |
|---|---|---|
HEADER
  ref_row "dense, tinystories" "4.478" stories260K s260-ts-50 tinystories "unstructured 50%" 0 dense "" "" "" "" tinystories
  ref_row "dense, wikitext2" "112.7" stories260K s260-ts-50 tinystories "unstructured 50%" 0 dense "" "" "" "" wikitext2
  ref_row "magnitude per matrix, tinystories" "43.4" stories260K s260-ts-50 tinystories "unstructured 50%" 0 magnitude "" "" "" "" tinystories
  ref_row "magnitude per matrix, wikitext2" "301.5" stories260K s260-ts-50 tinystories "unstructured 50%" 0 magnitude "" "" "" "" wikitext2
  ref_row "centralized Wanda, tinystories" "19.69" stories260K s260-ts-50 tinystories "unstructured 50%" 0 centralized-wanda "" "" "" "" tinystories
  ref_row "centralized Wanda, wikitext2" "203.5" stories260K s260-ts-50 tinystories "unstructured 50%" 0 centralized-wanda "" "" "" "" wikitext2
  ref_row "2:4 centralized, tinystories" "65.5" stories260K s260-ts-24 tinystories "2:4" 0 centralized-wanda "" "" "" "" tinystories
  ref_row "2:4 centralized, wikitext2" "242.8" stories260K s260-ts-24 tinystories "2:4" 0 centralized-wanda "" "" "" "" wikitext2
  ref_row "one-shot layer, no scaling, 64 clients, tie index, tinystories" "20.05 (19.94–20.15)" stories260K s260-ts-50 tinystories "unstructured 50%" 64 fedprllm one-shot layer no index tinystories
  ref_row "one-shot layer, no scaling, 64 clients, tie magnitude, tinystories" "20.05 (19.94–20.15)" stories260K s260-ts-50 tinystories "unstructured 50%" 64 fedprllm one-shot layer no magnitude tinystories
  ref_row "one-shot column, no scaling, 64 clients, tie index, tinystories" "65.9 (63.9–67.3)" stories260K s260-ts-50 tinystories "unstructured 50%" 64 fedprllm one-shot column no index tinystories
  echo
  echo "The reference's one-shot ranges are over its seeds; which of draw and split they vary is not stated there."
  echo
  echo "## Findings"
  echo
  echo "Computed by fedprllm-sim from each run's numbers (FormatFindings); gaps are of means, with the seed spread"
  echo "(half the range over runs) beside them. Where a run has whole-text values for a row, the claim uses them."
  echo
  echo "### Both models: ${HEADLINE} clients, 50%, TinyStories calibration"
  echo
  both_models
  for name in s260-ts-50 s260-c4-50 s260-ts-24 s260-c4-24 s260-ts-70 s260-c4-70 s260-ts-50-split b1m-ts-50; do
    [ -f "$TMP/$name/findings.md" ] || continue
    case "$name" in b1m-*) model=babyllama-1M ;; *) model=stories260K ;; esac
    echo
    echo "### $model, run $name"
    echo
    cat "$TMP/$name/findings.md"
  done
  echo
  echo "## Tables"
  for name in s260-ts-50 s260-c4-50 s260-ts-24 s260-c4-24 s260-ts-70 s260-c4-70 s260-ts-50-split b1m-ts-50; do
    [ -f "$TMP/$name/table.md" ] || continue
    case "$name" in b1m-*) model=babyllama-1M ;; *) model=stories260K ;; esac
    echo
    case "$name" in *-split) echo "## $model, run $name (split only)" ;; *) echo "## $model, run $name" ;; esac
    echo
    cat "$TMP/$name/table.md"
  done
  echo
  echo "![perplexity vs sparsity](sparsity_sweep.png)"
} > "$ROOT/docs/results.md"
echo "make_results.sh: wrote docs/results.md, docs/results.csv, docs/sparsity_sweep.png in ${seconds} s" \
  "(${evaluations} evaluations, cache hit rate ${hit_rate}%)"
