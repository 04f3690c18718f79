// fedprllm-sim's library: FedPrLLM's comparisons on one machine, with no network. C clients
// run inside one process through the same engine calls as the daemons (PruneLocally,
// GlobalPruner via AggregateOneShot, RunInProcessFederation), so a simulated model equals a
// networked one for the same settings. Each client's one-shot masks are computed once per
// (calibration set, pattern, seed, client count) and aggregated every way the table needs;
// every distinct model is evaluated once (cached by fingerprint).
//
//   SimSettings s;
//   s.model_path = "models/stories260K/stories260K.bin";
//   ASSIGN_OR_RETURN(s.calibrations, ...);  ASSIGN_OR_RETURN(s.evals, ...);
//   ASSIGN_OR_RETURN(SimTable table, RunSimulation(s, log));
//   std::string md = FormatMarkdown(s, table), csv = FormatCsv(table);
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/calibration_data.h"
#include "engine/federation.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace fedprllm {

// Which half of a set's data to use (docs/calibration_data.md §9): of text, the halves of
// SplitHalves (cut at the first "\n\n" at or after the middle character), tokenized each
// with BOS first; of token ids, the halves at the middle index.
enum class TextPart { kWhole, kFirstHalf, kSecondHalf };

// One named calibration set: its sources and the part of their joined data to use.
// Spec: "name=SOURCE[|SOURCE...][@first-half|@second-half]", each SOURCE spelled as
// ParseCalibrationSource reads it (docs/calibration_data.md), e.g.
// "tinystories=val.txt@second-half", "c4=c4.jsonl:prefix+gold_completion",
// "owt=train.bin:uint16@first-half". A set's sources are all text or all token ids.
struct CalibrationSet {
  std::string name;
  std::vector<CalibrationSource> sources;  // "by-file" split: one source per client
  TextPart part = TextPart::kWhole;
};
absl::StatusOr<CalibrationSet> ParseCalibrationSet(const std::string& spec);

// One evaluation text. Spec: "name=SOURCE[@first-half|@second-half]", SOURCE as for
// calibration (text is tokenized with BOS first and CRLF read as LF; ids are used as they are).
struct EvalText {
  std::string name;
  CalibrationSource source;
  TextPart part = TextPart::kWhole;
};
absl::StatusOr<EvalText> ParseEvalText(const std::string& spec);

enum class SplitMode {
  kEven,    // draw nsamples windows from the pooled text, shuffle, deal nsamples/C to each
  kByFile,  // client c draws nsamples/C windows from calibration source c (C = #sources)
};
absl::StatusOr<SplitMode> ParseSplitMode(absl::string_view text);  // "even" | "by-file"

struct SimSettings {
  // Model (Hugging Face directory or llama2.c .bin). Required.
  std::string model_path;
  // Default: found beside the model.
  std::string tokenizer_path;
  // Calibration sets; the table has one section per set. Required, >= 1.
  std::vector<CalibrationSet> calibrations;
  // Evaluation texts (table columns). Required, >= 1. The sweep uses the first.
  std::vector<EvalText> evals;
  // Client counts. Default {64, 8, 16}. Each must divide nsamples.
  std::vector<int> clients = {64, 8, 16};
  SplitMode split = SplitMode::kEven;
  // Total calibration windows over all clients. Default 128.
  int64_t nsamples = 128;
  // Tokens per calibration window. Default 256. At most the model's max_position_embeddings.
  int64_t seqlen = 256;
  // Seeds of the calibration window draw (SampleWindows). Default {0, 1, 2}.
  std::vector<uint64_t> seeds = {0, 1, 2};
  // Seeds of the client split (the even split's shuffle) and of the random tie-break.
  // Default empty: each run uses its draw seed here too, so the runs vary the draw and the
  // split together. Non-empty: the runs are every (draw seed, split seed) pair, draw-major;
  // seeds {0, 1, 2} with split_seeds {0} vary only the draw, seeds {0} with split_seeds
  // {0, 1, 2} only the split. Centralized Wanda does not depend on the split: its cells hold
  // one value per draw seed.
  std::vector<uint64_t> split_seeds;
  // Sparsity patterns. Default: 50% unstructured and 2:4.
  std::vector<SparsityPattern> patterns = {SparsityPattern{0.5, 0, 0}, SparsityPattern{0.5, 2, 4}};
  // One-shot comparison groups, scaling settings and tie-breaks to tabulate.
  std::vector<ComparisonGroup> groups = {ComparisonGroup::kLayer, ComparisonGroup::kRow, ComparisonGroup::kColumn};
  std::vector<bool> scalings = {false, true};
  std::vector<TieBreak> tie_breaks = {TieBreak::kSmallerMagnitude, TieBreak::kRandom};
  // Strategies: one-shot rows use every group x scaling; iterative rows use layer, no scaling.
  std::vector<Strategy> strategies = {Strategy::kOneShot, Strategy::kIterative};
  // Evaluation: tokens per window (default 256; at most the model's max_position_embeddings)
  // and windows per text: 0 (the default) scores every non-overlapping window of each whole
  // text; N > 0 scores the first N windows of each text, the same windows for every cell.
  int64_t eval_seqlen = 256;
  int64_t eval_max_windows = 0;
  // With eval_max_windows > 0: the headline rows are also scored on the whole texts, into
  // SimRow::full_ppl. Headline rows: dense, magnitude (per matrix), centralized Wanda, and at
  // `headline_clients` clients local-only (its first full_local_only_clients clients per run)
  // and FedPrLLM one-shot, no scaling, in full_headline_groups (N:M: any) with
  // full_headline_tie_breaks. Defaults: true, 64 clients, 1 local-only client, the layer
  // group, the magnitude and index tie-breaks (random is no paper's rule).
  bool full_headline = true;
  std::vector<ComparisonGroup> full_headline_groups = {ComparisonGroup::kLayer};
  std::vector<TieBreak> full_headline_tie_breaks = {TieBreak::kSmallerMagnitude, TieBreak::kIndex};
  int headline_clients = 64;
  int full_local_only_clients = 1;
  // Local-only rows evaluate at most this many clients per (client count, seed); 0 = all.
  // Default 0. Evaluation dominates the runtime, and 64 clients x 3 seeds is 192 models.
  int local_only_max_clients = 0;
  // Jobs run at once: one per (calibration set, pattern, seed), or per sweep point. 0 = auto:
  // one per core for small models on CPU (whose single operations are too small to spread
  // over cores), else 1.
  int jobs = 0;
  // A directory shared by runs (created by the caller): every evaluation is stored there by
  // (model SHA-256, evaluation tokens, window set, device, dtype), and a later run or another
  // process that scores a bit-identical model on the same windows reads it back instead. For
  // the runs of one build: the key does not hold the code that computed the values. Empty (the
  // default): evaluations are cached in memory for this run only.
  std::string eval_cache_dir;
  ComputeOptions compute;

  absl::Status Validate() const;
};

// A table cell: one perplexity per run (seed, or seed x client for local-only).
struct CellValues {
  std::vector<double> values;
  double mean() const;
  double min() const;
  double max() const;
};

struct SimRow {
  std::string calibration;
  std::string pattern;   // "unstructured 50%" style label via SparsityPattern::ToString
  int clients = 0;       // 0 for dense / magnitude / centralized
  std::string method;    // dense | magnitude | centralized-wanda | local-only | fedprllm
  std::string strategy;  // fedprllm: one-shot | iterative
  std::string group;     // fedprllm: layer | row | column
  bool scaling = false;
  std::string tie_break;  // fedprllm: magnitude | random
  std::map<std::string, CellValues> ppl;  // eval name -> values, on the table's windows
  // Eval name -> values on every window of the whole text; empty unless this is a headline
  // row of a capped table (SimSettings::full_headline).
  std::map<std::string, CellValues> full_ppl;

  std::string Label() const;
};

struct SimTable {
  std::vector<std::string> eval_names;
  // Windows each text was scored on: in SimRow::ppl (the cap, or every window) and in
  // SimRow::full_ppl (every window); parallel to eval_names.
  std::vector<int64_t> eval_windows;
  std::vector<int64_t> full_windows;
  std::vector<SimRow> rows;
  double seconds = 0;
  // Distinct evaluations run (a model scored on every text, on the capped windows or on the
  // whole texts) and cells asked for (evaluations + cache hits). A cell whose model is
  // bit-identical to one already scored (same SHA-256 of every tensor, LlamaModel::Fingerprint)
  // reuses that evaluation.
  int64_t models_evaluated = 0;
  int64_t evaluation_requests = 0;
  // What the runs of a cell vary, e.g. "the calibration draw (seeds 0, 1, 2; split seed 0)".
  std::string runs;
};

using SimLog = std::function<void(const std::string&)>;

// ---- Building blocks (exposed for tests and for other front ends) ----

// Even split: shuffles the rows of `pooled` ([n, seqlen]) with `seed` (Fisher-Yates on
// SplitMix64) and deals n / clients consecutive shuffled rows to each client. Requires
// clients >= 1 dividing n.
absl::StatusOr<std::vector<at::Tensor>> EvenSplit(const at::Tensor& pooled, int clients, uint64_t seed);

// Every client's one-shot masks: PruneLocally on its own samples (the daemons' client step).
absl::StatusOr<std::vector<std::vector<LayerMasks>>> ComputeClientMasks(const LlamaModel& base,
                                                                        const std::vector<at::Tensor>& client_samples,
                                                                        const LocalPruneOptions& local);

// Client c's own masks applied alone (local-only pruning).
absl::StatusOr<LlamaModel> LocalOnlyModel(const LlamaModel& base, const std::vector<LayerMasks>& masks,
                                          const SparsityPattern& pattern);

// The client-side Wanda options used by every federated and local run: row group, as Wanda.
LocalPruneOptions ClientPruneOptions(const SparsityPattern& pattern, const ComputeOptions& compute);

// The model one FedPrLLM row of the table stands for: calibration set `set_index` drawn with
// `seed` and dealt as the table deals it (`clients` clients for an even split, one per file
// for by-file), each client's masks from PruneLocally with `fed.local`, then aggregated by
// `fed` (one-shot: AggregateOneShot over the clients' masks; iterative:
// RunInProcessFederation). With the same windows, a networked run gives the same model.
absl::StatusOr<LlamaModel> SimulateFederation(const SimSettings& settings, size_t set_index, int clients,
                                              uint64_t seed, const FederationOptions& fed);

// Runs the whole table. `log` receives progress lines.
absl::StatusOr<SimTable> RunSimulation(const SimSettings& settings, const SimLog& log = nullptr);

// The table: a header (runs, windows per column, evaluations and cache hit rate), one section
// per (calibration, pattern), and with full_ppl a "whole texts" section of the headline rows.
std::string FormatMarkdown(const SimSettings& settings, const SimTable& table);
std::string FormatCsv(const SimTable& table);
// A short paragraph computed from the table, each claim with the seed spread beside it:
// one-shot layer (no scaling) vs centralized Wanda and vs local-only (on whole texts where the
// headline rows have them), where weight scaling helps, the tie-breaks, exact vs centralized.
std::string FormatFindings(const SimTable& table);

// ---- Sparsity sweep ----
struct SweepPoint {
  double sparsity = 0;
  double magnitude = 0, centralized = 0, fedprllm = 0, local_only_mean = 0;
};
// Perplexity on settings.evals[0] for unstructured sparsity in `sparsities`, calibration set
// 0, clients[0] clients, draw seed seeds[0] and split seed split_seeds[0] (seeds[0] when
// none): magnitude (per matrix), centralized Wanda, one-shot layer (no scaling, magnitude
// tie-break) and the mean over clients of local-only.
absl::StatusOr<std::vector<SweepPoint>> RunSweep(const SimSettings& settings, const std::vector<double>& sparsities,
                                                 const SimLog& log = nullptr);
// Writes <dir>/sparsity_sweep.dat, .gp, .csv and runs gnuplot to make <dir>/sparsity_sweep.png.
// Fails with a clear message when gnuplot is not installed.
// `model_name` titles the plot.
absl::Status WriteSweepPlot(const std::vector<SweepPoint>& points, const std::string& eval_name,
                            const std::string& dir, const std::string& model_name = "stories260K");

}  // namespace fedprllm
