// FedPrLLM simulation: baselines, federated rows, table formatting and the sparsity sweep.
#include "sim/simulation.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "engine/prune_job.h"
#include "model/cpu_runtime.h"
#include "model/model_and_tokenizer.h"
#include "model/perplexity.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace {

// Splits "name=rest@part" into its pieces.
absl::Status ParseNamedSpec(const std::string& spec, const char* what, std::string* name, std::string* rest,
                            TextPart* part) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", spec, "\": expected name=SOURCE[@first-half|@second-half] (docs/calibration_data.md)"));
  }
  *name = spec.substr(0, eq);
  *rest = spec.substr(eq + 1);
  *part = TextPart::kWhole;
  const size_t at = rest->rfind('@');
  if (at != std::string::npos) {
    const std::string selector = rest->substr(at + 1);
    if (selector == "first-half") {
      *part = TextPart::kFirstHalf;
    } else if (selector == "second-half") {
      *part = TextPart::kSecondHalf;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(what, " \"", spec, "\": unknown part \"", selector,
                                                     "\" (expected first-half or second-half)"));
    }
    rest->resize(at);
  }
  return absl::OkStatus();
}

// The token stream of `part` of `sources` (docs/calibration_data.md §9): text is split by
// SplitHalves, then tokenized with BOS first; ids are split at their middle index.
absl::StatusOr<std::vector<int>> ReadPartTokens(const std::vector<CalibrationSource>& sources, TextPart part,
                                                const Tokenizer& tokenizer, const CalibrationReadOptions& read) {
  ASSIGN_OR_RETURN(CalibrationData data, ReadCalibrationData(sources, read));
  if (part != TextPart::kWhole && data.is_tokens) {
    const auto middle = data.tokens.begin() + static_cast<std::ptrdiff_t>(data.tokens.size() / 2);
    data.tokens = part == TextPart::kFirstHalf ? std::vector<int>(data.tokens.begin(), middle)
                                               : std::vector<int>(middle, data.tokens.end());
  } else if (part != TextPart::kWhole) {
    auto halves = SplitHalves(data.text);
    data.text = part == TextPart::kFirstHalf ? halves.first : halves.second;
  }
  return CalibrationStream(tokenizer, std::move(data));
}

// Windows of the calibration (`seqlen`) and of the evaluation (`eval_seqlen`) must fit the model.
absl::Status CheckWindowsFitModel(const SimSettings& s, const LlamaModel& model, bool evaluates) {
  RETURN_IF_ERROR(CheckSeqlenFitsModel("seqlen", s.seqlen, model.config()));
  if (evaluates) RETURN_IF_ERROR(CheckSeqlenFitsModel("eval_seqlen", s.eval_seqlen, model.config()));
  return absl::OkStatus();
}

// Perplexity of each distinct model on every evaluation text, on the capped windows or on
// the whole texts, cached by the model's fingerprint (SHA-256 of every tensor) and the
// window set. Safe to call from several jobs at once; a model two jobs race on is evaluated
// twice, with the same result, and counted once. With a cache directory, evaluations are also
// stored there, one file per (model, texts, window set, device, dtype), and read back by any
// later run or process; a stored evaluation counts as a cache hit. The key does not hold the
// build: a directory is for the runs of one build (make_results.sh empties it each time).
class Evaluator {
 public:
  // `capped` scores options.max_windows windows per text (0 = all); the full evaluation uses
  // the same options with no cap.
  Evaluator(std::vector<std::vector<int>> texts, PerplexityOptions capped, std::string cache_dir = "")
      : texts_(std::move(texts)), capped_(capped), full_(capped), cache_dir_(std::move(cache_dir)) {
    full_.max_windows = 0;
    Sha256 digest;
    for (const std::vector<int>& tokens : texts_) {
      const std::string count = absl::StrCat(tokens.size(), ":");
      digest.Update(count);
      digest.Update(absl::string_view(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(int)));
    }
    texts_digest_ = digest.FinishHex();
  }

  absl::StatusOr<std::vector<double>> Evaluate(const LlamaModel& model, bool full = false) {
    const PerplexityOptions& options = full ? full_ : capped_;
    const std::string key = absl::StrCat(model.Fingerprint(), full ? "|full" : "|capped");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++requests_;
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    const std::string stored =
        cache_dir_.empty() ? ""
                           : absl::StrCat(cache_dir_, "/",
                                          Sha256Hex(absl::StrCat(key, "|", texts_digest_, "|", options.seqlen, "|",
                                                                 options.max_windows, "|", options.compute.device.str(),
                                                                 "|", c10::toString(options.compute.dtype))),
                                          ".txt");
    std::vector<double> ppl;
    std::vector<int64_t> windows;
    if (!stored.empty() && ReadStored(stored, &ppl, &windows)) {
      std::lock_guard<std::mutex> lock(mutex_);
      (full ? full_windows_ : capped_windows_) = windows;
      cache_.emplace(key, ppl);
      return ppl;
    }
    for (const std::vector<int>& tokens : texts_) {
      ASSIGN_OR_RETURN(PerplexityResult r, EvaluatePerplexity(model, tokens, options));
      ppl.push_back(r.perplexity);
      windows.push_back(r.windows);
    }
    if (!stored.empty()) RETURN_IF_ERROR(Store(stored, ppl, windows));
    std::lock_guard<std::mutex> lock(mutex_);
    (full ? full_windows_ : capped_windows_) = windows;
    if (cache_.emplace(key, ppl).second) ++evaluated_;
    return ppl;
  }
  int64_t evaluated() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return evaluated_;
  }
  int64_t requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  // Windows per text of the last evaluation of each kind (empty before the first).
  std::vector<int64_t> windows(bool full) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return full ? full_windows_ : capped_windows_;
  }

 private:
  // A stored evaluation: one line "perplexity windows" per text, perplexities to 17 digits
  // (they read back to the same double). False when absent or not of this shape.
  bool ReadStored(const std::string& path, std::vector<double>* ppl, std::vector<int64_t>* windows) const {
    std::ifstream in(path);
    if (!in) return false;
    double p = 0;
    int64_t w = 0;
    while (in >> p >> w) {
      ppl->push_back(p);
      windows->push_back(w);
    }
    if (ppl->size() == texts_.size()) return true;
    ppl->clear();
    windows->clear();
    return false;
  }
  // Written to a temporary name and renamed, so a reader in another process sees all or nothing.
  static absl::Status Store(const std::string& path, const std::vector<double>& ppl,
                            const std::vector<int64_t>& windows) {
    std::string text;
    for (size_t i = 0; i < ppl.size(); ++i) absl::StrAppendFormat(&text, "%.17g %d\n", ppl[i], windows[i]);
    const std::string temporary =
        absl::StrCat(path, ".tmp.", getpid(), ".", std::hash<std::thread::id>()(std::this_thread::get_id()));
    {
      std::ofstream out(temporary, std::ios::trunc);
      out << text;
      if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write the evaluation cache file ", temporary));
    }
    std::error_code error;
    std::filesystem::rename(temporary, path, error);
    if (error) {
      return absl::InternalError(absl::StrCat("cannot rename ", temporary, " to ", path, ": ", error.message()));
    }
    return absl::OkStatus();
  }

  const std::vector<std::vector<int>> texts_;
  PerplexityOptions capped_, full_;
  const std::string cache_dir_;
  std::string texts_digest_;
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<double>> cache_;
  int64_t evaluated_ = 0, requests_ = 0;
  std::vector<int64_t> capped_windows_, full_windows_;
};

// Runs job(0) ... job(count - 1), on `threads` threads at once when threads > 1; each job's
// tensor operations then run single-threaded (ATen runs nested parallel work inline). Returns
// the first failure in job order.
absl::Status RunJobs(int64_t count, int threads, const std::function<absl::Status(int64_t)>& job) {
  std::vector<absl::Status> results(count);
  if (threads <= 1 || count <= 1) {
    for (int64_t j = 0; j < count; ++j) results[j] = job(j);
  } else {
    std::atomic<int64_t> next{0};
    at::parallel_for(0, std::min<int64_t>(threads, count), 1, [&](int64_t begin, int64_t end) {
      for (int64_t worker = begin; worker < end; ++worker) {
        for (int64_t j = next++; j < count; j = next++) results[j] = job(j);
      }
    });
  }
  for (absl::Status& status : results) RETURN_IF_ERROR(status);
  return absl::OkStatus();
}

int JobThreads(const SimSettings& s, const LlamaModel& model) {
  if (s.jobs > 0) return s.jobs;
  return s.compute.device.is_cpu() && IsSmallModel(model.config().hidden_size) ? at::get_num_threads() : 1;
}

// Rows in first-added order, merged by their identifying fields.
class RowBook {
 public:
  explicit RowBook(std::vector<std::string> eval_names) : eval_names_(std::move(eval_names)) {}
  // `full` (whole-text values) may be empty.
  void Add(const SimRow& id, const std::vector<double>& ppl, const std::vector<double>& full) {
    const std::string key = absl::StrCat(id.calibration, "|", id.pattern, "|", id.clients, "|", id.method, "|",
                                         id.strategy, "|", id.group, "|", id.scaling, "|", id.tie_break);
    auto it = index_.find(key);
    if (it == index_.end()) {
      it = index_.emplace(key, rows_.size()).first;
      rows_.push_back(id);
      rows_.back().ppl.clear();
    }
    for (size_t e = 0; e < eval_names_.size(); ++e) rows_[it->second].ppl[eval_names_[e]].values.push_back(ppl[e]);
    for (size_t e = 0; e < full.size(); ++e) rows_[it->second].full_ppl[eval_names_[e]].values.push_back(full[e]);
  }
  std::vector<SimRow> Take() { return std::move(rows_); }

 private:
  std::vector<std::string> eval_names_;
  std::map<std::string, size_t> index_;
  std::vector<SimRow> rows_;
};

struct PreparedCalibration {
  std::vector<int> pooled;                 // tokens of the whole set (even split)
  std::vector<std::vector<int>> per_file;  // tokens per source (by-file split)
};

absl::StatusOr<PreparedCalibration> PrepareCalibration(const CalibrationSet& set, const Tokenizer& tokenizer,
                                                       SplitMode split, const CalibrationReadOptions& read) {
  PreparedCalibration out;
  if (split == SplitMode::kEven) {
    ASSIGN_OR_RETURN(out.pooled, ReadPartTokens(set.sources, set.part, tokenizer, read));
  } else {
    for (const CalibrationSource& source : set.sources) {
      ASSIGN_OR_RETURN(std::vector<int> tokens, ReadPartTokens({source}, set.part, tokenizer, read));
      out.per_file.push_back(std::move(tokens));
    }
  }
  return out;
}

// The pooled windows and each client's share for one client count: the windows drawn with
// `draw_seed`, dealt (even split) with `split_seed`. A by-file split deals nothing: client c
// draws from file c with `draw_seed`.
absl::StatusOr<std::pair<at::Tensor, std::vector<at::Tensor>>> DrawClientSamples(const SimSettings& s,
                                                                                  const PreparedCalibration& calib,
                                                                                  int clients, uint64_t draw_seed,
                                                                                  uint64_t split_seed) {
  if (s.split == SplitMode::kEven) {
    ASSIGN_OR_RETURN(at::Tensor pooled, SampleWindows(calib.pooled, {s.nsamples, s.seqlen, draw_seed}));
    ASSIGN_OR_RETURN(std::vector<at::Tensor> split, EvenSplit(pooled, clients, split_seed));
    return std::make_pair(pooled, split);
  }
  std::vector<at::Tensor> split;
  for (const std::vector<int>& tokens : calib.per_file) {
    ASSIGN_OR_RETURN(at::Tensor samples, SampleWindows(tokens, {s.nsamples / static_cast<int64_t>(calib.per_file.size()),
                                                                s.seqlen, draw_seed}));
    split.push_back(samples);
  }
  ASSIGN_OR_RETURN(at::Tensor pooled, TorchCall("pooling client samples", [&] { return at::cat(split, 0); }));
  return std::make_pair(pooled, split);
}

std::vector<int> ClientCounts(const SimSettings& s) {
  if (s.split == SplitMode::kByFile) return {static_cast<int>(s.calibrations.front().sources.size())};
  return s.clients;
}

std::string Cell(const CellValues& v) {
  if (v.values.empty()) return "";
  if (v.values.size() == 1) return absl::StrFormat("%.2f", v.mean());
  return absl::StrFormat("%.2f [%.2f, %.2f]", v.mean(), v.min(), v.max());
}

std::string PatternLabel(const SparsityPattern& p) {
  return p.structured() ? p.ToString() : absl::StrFormat("unstructured %g%%", p.sparsity * 100);
}

std::string SeedList(const std::vector<uint64_t>& seeds) { return absl::StrJoin(seeds, ", "); }

// What the runs of one cell vary (SimSettings::split_seeds), for the table's header.
std::string DescribeRuns(const SimSettings& s) {
  const std::string what = s.split == SplitMode::kEven ? "client split" : "random tie-break";
  if (s.split_seeds.empty()) {
    return absl::StrCat("the calibration draw and the ", what, " together (seeds ", SeedList(s.seeds),
                        "; each run uses its seed for both)");
  }
  if (s.split_seeds.size() == 1) {
    return absl::StrCat("the calibration draw only (draw seeds ", SeedList(s.seeds), "; ", what, " seed ",
                        s.split_seeds.front(), " in every run)");
  }
  if (s.seeds.size() == 1) {
    return absl::StrCat("the ", what, " only (split seeds ", SeedList(s.split_seeds), "; draw seed ", s.seeds.front(),
                        " in every run)");
  }
  return absl::StrCat("the calibration draw and the ", what, " independently (draw seeds ", SeedList(s.seeds),
                      " x split seeds ", SeedList(s.split_seeds), ")");
}

}  // namespace

absl::StatusOr<CalibrationSet> ParseCalibrationSet(const std::string& spec) {
  CalibrationSet set;
  std::string rest;
  RETURN_IF_ERROR(ParseNamedSpec(spec, "calibration set", &set.name, &rest, &set.part));
  // Several files of one set are separated by '|' (each a by-file client).
  size_t start = 0;
  while (true) {
    const size_t bar = rest.find('|', start);
    ASSIGN_OR_RETURN(CalibrationSource source, ParseCalibrationSource(rest.substr(start, bar - start)));
    set.sources.push_back(std::move(source));
    if (bar == std::string::npos) break;
    start = bar + 1;
  }
  return set;
}

absl::StatusOr<EvalText> ParseEvalText(const std::string& spec) {
  EvalText eval;
  std::string rest;
  RETURN_IF_ERROR(ParseNamedSpec(spec, "evaluation text", &eval.name, &rest, &eval.part));
  ASSIGN_OR_RETURN(eval.source, ParseCalibrationSource(rest));
  return eval;
}

absl::StatusOr<SplitMode> ParseSplitMode(absl::string_view text) {
  if (text == "even") return SplitMode::kEven;
  if (text == "by-file") return SplitMode::kByFile;
  return absl::InvalidArgumentError(absl::StrCat("split \"", text, "\": expected even or by-file"));
}

absl::Status SimSettings::Validate() const {
  if (model_path.empty()) return absl::InvalidArgumentError("model: required");
  if (calibrations.empty()) return absl::InvalidArgumentError("calibration: at least one set is required");
  if (evals.empty()) return absl::InvalidArgumentError("eval: at least one text is required");
  if (seeds.empty()) return absl::InvalidArgumentError("seeds: at least one is required");
  if (patterns.empty()) return absl::InvalidArgumentError("patterns: at least one is required");
  if (nsamples < 1) return absl::InvalidArgumentError("nsamples: must be >= 1");
  if (seqlen < 2) return absl::InvalidArgumentError("seqlen: must be >= 2");
  if (eval_seqlen < 2) return absl::InvalidArgumentError("eval_seqlen: must be >= 2");
  if (eval_max_windows < 0) return absl::InvalidArgumentError("eval_max_windows: must be >= 0 (0 = whole texts)");
  if (headline_clients < 1) return absl::InvalidArgumentError("headline_clients: must be >= 1");
  if (full_local_only_clients < 0) return absl::InvalidArgumentError("full_local_only_clients: must be >= 0");
  if (jobs < 0) return absl::InvalidArgumentError("jobs: must be >= 0 (0 = auto)");
  for (const SparsityPattern& p : patterns) RETURN_IF_ERROR(p.Validate());
  if (split == SplitMode::kEven) {
    if (clients.empty()) return absl::InvalidArgumentError("clients: at least one count is required");
    for (int c : clients) {
      if (c < 1 || nsamples % c != 0) {
        return absl::InvalidArgumentError(absl::StrCat("clients: ", c, " does not divide nsamples ", nsamples));
      }
    }
  } else {
    for (const CalibrationSet& set : calibrations) {
      if (set.sources.size() != calibrations.front().sources.size() ||
          nsamples % static_cast<int64_t>(set.sources.size()) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("split by-file: set ", set.name, " has ", set.sources.size(),
                                                       " files; every set needs the same count, dividing nsamples"));
      }
    }
  }
  return absl::OkStatus();
}

double CellValues::mean() const {
  return values.empty() ? NAN : std::accumulate(values.begin(), values.end(), 0.0) / values.size();
}
double CellValues::min() const { return values.empty() ? NAN : *std::min_element(values.begin(), values.end()); }
double CellValues::max() const { return values.empty() ? NAN : *std::max_element(values.begin(), values.end()); }

std::string SimRow::Label() const {
  if (method == "dense") return "Dense";
  if (method == "magnitude") return "Magnitude (per matrix)";
  if (method == "magnitude-row") return "Magnitude (per row)";
  if (method == "centralized-wanda") return "Centralized Wanda (all samples)";
  if (method == "local-only") return "Local-only Wanda";
  if (strategy == "exact") return absl::StrCat("FedPrLLM exact (pooled statistics), ", group);
  return absl::StrCat("FedPrLLM ", strategy, ", ", group, ", ", scaling ? "scaling" : "no scaling", ", tie: ",
                      tie_break);
}

absl::StatusOr<std::vector<at::Tensor>> EvenSplit(const at::Tensor& pooled, int clients, uint64_t seed) {
  if (pooled.dim() != 2) return absl::InvalidArgumentError("pooled samples must be [n, seqlen]");
  const int64_t n = pooled.size(0);
  if (clients < 1 || n % clients != 0) {
    return absl::InvalidArgumentError(absl::StrCat(clients, " clients do not evenly divide ", n, " samples"));
  }
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  uint64_t state = seed ^ 0x5EED5EED5EED5EEDull;  // a stream apart from the window draw's
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(SplitMix64(&state) % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  const int64_t per = n / clients;
  return TorchCall("splitting samples", [&] {
    std::vector<at::Tensor> out;
    for (int c = 0; c < clients; ++c) {
      std::vector<int64_t> rows(order.begin() + c * per, order.begin() + (c + 1) * per);
      out.push_back(pooled.index_select(0, at::tensor(rows, at::kLong)).contiguous());
    }
    return out;
  });
}

LocalPruneOptions ClientPruneOptions(const SparsityPattern& pattern, const ComputeOptions& compute) {
  LocalPruneOptions local;
  local.pattern = pattern;
  local.metric = PruneMetric::kWanda;
  local.group = ComparisonGroup::kRow;
  local.compute = compute;
  return local;
}

absl::StatusOr<std::vector<std::vector<LayerMasks>>> ComputeClientMasks(const LlamaModel& base,
                                                                        const std::vector<at::Tensor>& client_samples,
                                                                        const LocalPruneOptions& local) {
  std::vector<std::vector<LayerMasks>> masks;
  for (const at::Tensor& samples : client_samples) {
    ASSIGN_OR_RETURN(LocalPruneResult result, PruneLocally(base, samples, local));
    masks.push_back(std::move(result.masks));
  }
  return masks;
}

absl::StatusOr<LlamaModel> LocalOnlyModel(const LlamaModel& base, const std::vector<LayerMasks>& masks,
                                          const SparsityPattern& pattern) {
  // One client's votes are 0/1 with exactly the pattern's count per row (or N:M run), so
  // row-group aggregation returns its own masks unchanged.
  AggregationOptions options;
  options.group = ComparisonGroup::kRow;
  options.pattern = pattern;
  return AggregateOneShot(base, {masks}, options);
}

absl::StatusOr<LlamaModel> SimulateFederation(const SimSettings& s, size_t set_index, int clients, uint64_t seed,
                                              const FederationOptions& fed) {
  RETURN_IF_ERROR(s.Validate());
  if (set_index >= s.calibrations.size()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration set ", set_index, " does not exist"));
  }
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(s.model_path, s.tokenizer_path));
  LlamaModel base = std::move(loaded.model);
  Tokenizer tokenizer = std::move(loaded.tokenizer);
  RETURN_IF_ERROR(CheckWindowsFitModel(s, base, /*evaluates=*/false));
  ASSIGN_OR_RETURN(PreparedCalibration calib, PrepareCalibration(s.calibrations[set_index], tokenizer, s.split,
                                                                 {base.config().vocab_size, nullptr}));
  ASSIGN_OR_RETURN(auto drawn, DrawClientSamples(s, calib, clients, seed, seed));
  if (fed.strategy != Strategy::kOneShot) return RunInProcessFederation(base, drawn.second, fed);
  ASSIGN_OR_RETURN(auto masks, ComputeClientMasks(base, drawn.second, fed.local));
  return AggregateOneShot(base, masks, fed.aggregation);
}

absl::StatusOr<SimTable> RunSimulation(const SimSettings& s, const SimLog& log) {
  RETURN_IF_ERROR(s.Validate());
  auto say = [&](const std::string& line) { if (log) log(line); };
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(s.model_path, s.tokenizer_path));
  LlamaModel base = std::move(loaded.model);
  Tokenizer tokenizer = std::move(loaded.tokenizer);
  RETURN_IF_ERROR(CheckWindowsFitModel(s, base, /*evaluates=*/true));
  const CalibrationReadOptions read{base.config().vocab_size, say};

  SimTable table;
  std::vector<std::vector<int>> eval_tokens;
  for (const EvalText& e : s.evals) {
    ASSIGN_OR_RETURN(std::vector<int> tokens, ReadPartTokens({e.source}, e.part, tokenizer, read));
    table.eval_names.push_back(e.name);
    eval_tokens.push_back(std::move(tokens));
  }
  PerplexityOptions eval_options;
  eval_options.seqlen = s.eval_seqlen;
  eval_options.max_windows = s.eval_max_windows;
  eval_options.compute = s.compute;
  Evaluator evaluator(std::move(eval_tokens), eval_options, s.eval_cache_dir);
  RowBook book(table.eval_names);
  const bool one_shot = std::find(s.strategies.begin(), s.strategies.end(), Strategy::kOneShot) != s.strategies.end();
  const bool iterative =
      std::find(s.strategies.begin(), s.strategies.end(), Strategy::kIterative) != s.strategies.end();
  const bool exact = std::find(s.strategies.begin(), s.strategies.end(), Strategy::kExact) != s.strategies.end();

  std::vector<PreparedCalibration> calibrations;
  for (const CalibrationSet& set : s.calibrations) {
    ASSIGN_OR_RETURN(PreparedCalibration calib, PrepareCalibration(set, tokenizer, s.split, read));
    calibrations.push_back(std::move(calib));
  }
  // The runs: (draw seed, split seed) pairs (SimSettings::split_seeds).
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  for (uint64_t draw : s.seeds) {
    if (s.split_seeds.empty()) runs.emplace_back(draw, draw);
    for (uint64_t split : s.split_seeds) runs.emplace_back(draw, split);
  }
  table.runs = DescribeRuns(s);
  // One job per (calibration set, pattern, run); its rows go to the book in job order, so the
  // table does not depend on how many jobs ran at once.
  const int64_t num_patterns = s.patterns.size(), num_seeds = runs.size();
  const int64_t num_jobs = static_cast<int64_t>(s.calibrations.size()) * num_patterns * num_seeds;
  struct Evaluated {
    SimRow row;
    std::vector<double> ppl, full;
  };
  std::vector<std::vector<Evaluated>> job_rows(num_jobs);
  std::mutex log_mutex;
  const bool capped = s.eval_max_windows > 0;
  auto run_job = [&](int64_t job) -> absl::Status {
    const CalibrationSet& set = s.calibrations[job / (num_patterns * num_seeds)];
    const PreparedCalibration& calib = calibrations[job / (num_patterns * num_seeds)];
    const SparsityPattern& pattern = s.patterns[(job / num_seeds) % num_patterns];
    const size_t si = job % num_seeds;
    const uint64_t draw_seed = runs[si].first, split_seed = runs[si].second;
    // The first run of its draw seed: centralized Wanda depends on the draw only.
    const bool first_of_draw = s.split_seeds.empty() || split_seed == s.split_seeds.front();
    const std::string plabel = PatternLabel(pattern);
    auto& rows = job_rows[job];
    auto id = [&](int clients, const std::string& method) {
      SimRow row;
      row.calibration = set.name;
      row.pattern = plabel;
      row.clients = clients;
      row.method = method;
      return row;
    };
    // `whole_ok`: false for local-only clients past full_local_only_clients.
    auto evaluate = [&](const LlamaModel& model, SimRow row, bool whole_ok = true) -> absl::Status {
      Evaluated e;
      ASSIGN_OR_RETURN(e.ppl, evaluator.Evaluate(model));
      auto listed_group = [&] {
        if (row.group == "any (N:M)") return true;
        return std::any_of(s.full_headline_groups.begin(), s.full_headline_groups.end(),
                           [&](ComparisonGroup g) { return row.group == ComparisonGroupName(g); });
      };
      auto listed_tie = [&] {
        return std::any_of(s.full_headline_tie_breaks.begin(), s.full_headline_tie_breaks.end(),
                           [&](TieBreak t) { return row.tie_break == TieBreakName(t); });
      };
      const bool headline =
          row.method == "dense" || row.method == "magnitude" || row.method == "centralized-wanda" ||
          (row.clients == s.headline_clients &&
           (row.method == "local-only" ||
            (row.strategy == "one-shot" && !row.scaling && listed_tie() && listed_group())));
      if (capped && s.full_headline && headline && whole_ok) {
        ASSIGN_OR_RETURN(e.full, evaluator.Evaluate(model, /*full=*/true));
      }
      e.row = std::move(row);
      rows.push_back(std::move(e));
      return absl::OkStatus();
    };
    if (si == 0) RETURN_IF_ERROR(evaluate(base, id(0, "dense")));
    const LocalPruneOptions local = ClientPruneOptions(pattern, s.compute);
    const std::vector<int> client_counts = ClientCounts(s);
    ASSIGN_OR_RETURN(auto drawn, DrawClientSamples(s, calib, client_counts.front(), draw_seed, split_seed));
    const at::Tensor pooled = drawn.first;
    if (si == 0) {  // Wanda's magnitude baseline compares whole matrices; per row is the extra row
      LocalPruneOptions magnitude = local;
      magnitude.metric = PruneMetric::kMagnitude;
      magnitude.group = ComparisonGroup::kLayer;
      ASSIGN_OR_RETURN(LlamaModel m, PruneModel(base, pooled, magnitude, nullptr));
      RETURN_IF_ERROR(evaluate(m, id(0, "magnitude")));
      if (!pattern.structured()) {  // N:M has no group
        magnitude.group = ComparisonGroup::kRow;
        ASSIGN_OR_RETURN(LlamaModel per_row, PruneModel(base, pooled, magnitude, nullptr));
        RETURN_IF_ERROR(evaluate(per_row, id(0, "magnitude-row")));
      }
    }
    if (first_of_draw) {
      ASSIGN_OR_RETURN(LlamaModel m, PruneModel(base, pooled, local, nullptr));
      RETURN_IF_ERROR(evaluate(m, id(0, "centralized-wanda")));
    }
    for (int clients : client_counts) {
      ASSIGN_OR_RETURN(auto split_draw, DrawClientSamples(s, calib, clients, draw_seed, split_seed));
      const std::vector<at::Tensor>& split = split_draw.second;
      ASSIGN_OR_RETURN(auto masks, ComputeClientMasks(base, split, local));
      for (size_t c = 0; c < masks.size(); ++c) {
        if (s.local_only_max_clients > 0 && c >= static_cast<size_t>(s.local_only_max_clients)) break;
        ASSIGN_OR_RETURN(LlamaModel m, LocalOnlyModel(base, masks[c], pattern));
        RETURN_IF_ERROR(evaluate(m, id(clients, "local-only"), c < static_cast<size_t>(s.full_local_only_clients)));
      }
      if (exact) {  // pooled statistics, Wanda's row group; no votes, so no tie-break
        FederationOptions fed;
        fed.strategy = Strategy::kExact;
        fed.aggregation.group = ComparisonGroup::kRow;
        fed.aggregation.pattern = pattern;
        fed.local = local;
        ASSIGN_OR_RETURN(LlamaModel m, RunInProcessFederation(base, split, fed));
        SimRow row = id(clients, "fedprllm");
        row.strategy = "exact";
        row.group = pattern.structured() ? "any (N:M)" : "row";
        RETURN_IF_ERROR(evaluate(m, std::move(row)));
      }
      for (TieBreak tie : s.tie_breaks) {
        if (one_shot) {
          for (ComparisonGroup group : s.groups) {
            // N:M aggregation ignores the comparison group: one row stands for all.
            if (pattern.structured() && group != s.groups.front()) continue;
            for (bool scaling : s.scalings) {
              AggregationOptions agg;
              agg.group = group;
              agg.pattern = pattern;
              agg.tie_break = tie;
              agg.seed = split_seed;
              agg.weight_scaling = scaling;
              ASSIGN_OR_RETURN(LlamaModel m, AggregateOneShot(base, masks, agg));
              SimRow row = id(clients, "fedprllm");
              row.strategy = "one-shot";
              row.group = pattern.structured() ? "any (N:M)" : std::string(ComparisonGroupName(group));
              row.scaling = scaling;
              row.tie_break = std::string(TieBreakName(tie));
              RETURN_IF_ERROR(evaluate(m, std::move(row)));
            }
          }
        }
        if (iterative) {
          FederationOptions fed;
          fed.strategy = Strategy::kIterative;
          fed.aggregation.group = ComparisonGroup::kLayer;
          fed.aggregation.pattern = pattern;
          fed.aggregation.tie_break = tie;
          fed.aggregation.seed = split_seed;
          fed.local = local;
          ASSIGN_OR_RETURN(LlamaModel m, RunInProcessFederation(base, split, fed));
          SimRow row = id(clients, "fedprllm");
          row.strategy = "iterative";
          row.group = pattern.structured() ? "any (N:M)" : "layer";
          row.tie_break = std::string(TieBreakName(tie));
          RETURN_IF_ERROR(evaluate(m, std::move(row)));
        }
      }
      std::lock_guard<std::mutex> lock(log_mutex);
      say(absl::StrFormat("%s %s draw seed %d split seed %d: %d clients done (%d models evaluated, %.0fs)", set.name,
                          plabel, draw_seed, split_seed, clients, evaluator.evaluated(),
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RunJobs(num_jobs, JobThreads(s, base), run_job));
  for (const auto& rows : job_rows) {
    for (const Evaluated& e : rows) book.Add(e.row, e.ppl, e.full);
  }
  table.rows = book.Take();
  table.eval_windows = evaluator.windows(false);
  table.full_windows = evaluator.windows(true);
  table.models_evaluated = evaluator.evaluated();
  table.evaluation_requests = evaluator.requests();
  table.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return table;
}

namespace {

// Rows of `table` as markdown sections, one per (calibration, pattern), from `cells` (ppl or
// full_ppl); rows without values there are left out.
void WriteSections(const SimTable& table, std::map<std::string, CellValues> SimRow::*cells, const std::string& title,
                   std::ostringstream* out) {
  std::string current_section;
  for (const SimRow& row : table.rows) {
    if ((row.*cells).empty()) continue;
    const std::string section = absl::StrCat(row.calibration, "|", row.pattern);
    if (section != current_section) {
      current_section = section;
      *out << "\n### " << title << "Calibration: " << row.calibration << ", " << row.pattern << "\n\n";
      *out << "| Method | Clients |";
      for (const std::string& e : table.eval_names) *out << " " << e << " |";
      *out << "\n|---|---|";
      for (size_t i = 0; i < table.eval_names.size(); ++i) *out << "---|";
      *out << "\n";
    }
    *out << "| " << row.Label() << " | " << (row.clients == 0 ? std::string("—") : std::to_string(row.clients))
         << " |";
    for (const std::string& e : table.eval_names) {
      auto it = (row.*cells).find(e);
      *out << " " << (it == (row.*cells).end() ? std::string() : Cell(it->second)) << " |";
    }
    *out << "\n";
  }
}

std::string WindowList(const SimTable& table, const std::vector<int64_t>& windows) {
  std::vector<std::string> parts;
  for (size_t e = 0; e < table.eval_names.size() && e < windows.size(); ++e) {
    parts.push_back(absl::StrCat(table.eval_names[e], " ", windows[e]));
  }
  return absl::StrJoin(parts, ", ");
}

bool HasFull(const SimTable& table) {
  return std::any_of(table.rows.begin(), table.rows.end(), [](const SimRow& r) { return !r.full_ppl.empty(); });
}

}  // namespace

std::string FormatMarkdown(const SimSettings& s, const SimTable& table) {
  std::ostringstream out;
  const bool full = HasFull(table);
  const bool capped = s.eval_max_windows > 0;
  out << "- **Runs:** each cell is \"mean [min, max]\" over its runs, which vary " << table.runs
      << ". Local-only cells are over clients x runs.\n";
  out << "- **Windows of " << s.eval_seqlen << " tokens per column:** "
      << (capped ? absl::StrCat("the first ", s.eval_max_windows, " of each text, the same for every cell: ")
                 : std::string("every window of each whole text: "))
      << WindowList(table, table.eval_windows);
  if (full) out << "; whole texts (headline rows, their own section): " << WindowList(table, table.full_windows);
  out << ".\n";
  const double hits = table.evaluation_requests - table.models_evaluated;
  out << absl::StrFormat(
      "- **Evaluations:** %d distinct (model, window set) evaluations for %d cells asked for; %d reused a "
      "bit-identical model's evaluation (SHA-256 of every tensor): cache hit rate %.1f%%.\n",
      table.models_evaluated, table.evaluation_requests, static_cast<int64_t>(hits),
      table.evaluation_requests > 0 ? 100.0 * hits / table.evaluation_requests : 0.0);
  if (full) WriteSections(table, &SimRow::full_ppl, "Whole texts (headline rows). ", &out);
  WriteSections(table, &SimRow::ppl, capped ? absl::StrCat("First ", s.eval_max_windows, " windows. ") : "", &out);
  return out.str();
}

std::string FormatCsv(const SimTable& table) {
  std::ostringstream out;
  out << "calibration,pattern,clients,method,strategy,group,scaling,tie_break,eval,windows,mean,min,max,runs\n";
  auto write = [&](const SimRow& row, const std::map<std::string, CellValues>& cells,
                   const std::vector<int64_t>& windows) {
    for (size_t e = 0; e < table.eval_names.size(); ++e) {
      auto it = cells.find(table.eval_names[e]);
      if (it == cells.end()) continue;
      out << row.calibration << "," << row.pattern << "," << row.clients << "," << row.method << "," << row.strategy
          << "," << row.group << "," << (row.method == "fedprllm" ? (row.scaling ? "yes" : "no") : "") << ","
          << row.tie_break << "," << table.eval_names[e] << "," << (e < windows.size() ? windows[e] : 0) << ","
          << absl::StrFormat("%.4f,%.4f,%.4f,%d", it->second.mean(), it->second.min(), it->second.max(),
                             it->second.values.size())
          << "\n";
    }
  };
  for (const SimRow& row : table.rows) write(row, row.ppl, table.eval_windows);
  for (const SimRow& row : table.rows) write(row, row.full_ppl, table.full_windows);
  return out.str();
}

namespace {

// Half the range of a cell, as a fraction of its mean: the seed spread stated beside claims.
double HalfRange(const CellValues& v) { return v.values.size() < 2 ? 0 : (v.max() - v.min()) / (2 * v.mean()); }

// A row's values on `eval`: on the whole text when it has them, else on the table's windows.
const CellValues* Values(const SimRow& row, const std::string& eval, bool whole) {
  const auto& cells = whole ? row.full_ppl : row.ppl;
  auto it = cells.find(eval);
  return it == cells.end() ? nullptr : &it->second;
}

struct Range {
  double lo = 1e300, hi = -1e300;
  int n = 0;
  void Add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    ++n;
  }
  std::string Percent() const {
    return n == 0 ? "n/a" : absl::StrFormat("%.1f%% to %.1f%%", lo * 100, hi * 100);
  }
  std::string SignedPercent() const {
    return n == 0 ? "n/a" : absl::StrFormat("%+.1f%% to %+.1f%%", lo * 100, hi * 100);
  }
};

}  // namespace

std::string FormatFindings(const SimTable& table) {
  auto find = [&](const SimRow& like, const std::string& method, const std::string& strategy, const std::string& group,
                  bool scaling, const std::string& tie) -> const SimRow* {
    for (const SimRow& r : table.rows) {
      if (r.calibration == like.calibration && r.pattern == like.pattern && r.method == method &&
          (method == "centralized-wanda" || r.clients == like.clients) && r.strategy == strategy &&
          r.group == group && r.scaling == scaling && r.tie_break == tie) {
        return &r;
      }
    }
    return nullptr;
  };
  std::ostringstream out;
  const bool whole_available = HasFull(table);
  // Exact (pooled statistics) vs centralized: the ratio of every cell.
  Range exact;
  for (const SimRow& r : table.rows) {
    if (r.method != "fedprllm" || r.strategy != "exact") continue;
    const SimRow* c = find(r, "centralized-wanda", "", "", false, "");
    if (c == nullptr) continue;
    for (const std::string& e : table.eval_names) exact.Add(r.ppl.at(e).mean() / c->ppl.at(e).mean() - 1);
  }
  if (exact.n > 0) {
    out << absl::StrFormat("- **Exact** (pooled statistics, row group) vs centralized Wanda: perplexity change %+.4f%% to "
                           "%+.4f%%",
                           exact.lo * 100, exact.hi * 100)
        << " over " << exact.n << " (calibration, pattern, clients, eval) cells.\n";
  }
  // One-shot, layer (any for N:M), no scaling, per tie-break: vs centralized and vs local-only.
  std::vector<std::string> ties;
  for (const SimRow& r : table.rows) {
    if (r.method == "fedprllm" && r.strategy == "one-shot" &&
        std::find(ties.begin(), ties.end(), r.tie_break) == ties.end()) {
      ties.push_back(r.tie_break);
    }
  }
  for (const std::string& tie : ties) {
    int within = 0, cells = 0, beats = 0, beats_all = 0, local_cells = 0, above = 0, below = 0;
    bool structured = false, unstructured = false;
    Range gap, own_spread, cen_spread, local_gap;
    std::vector<std::string> detail;
    for (const SimRow& r : table.rows) {
      if (r.method != "fedprllm" || r.strategy != "one-shot" || r.scaling || r.tie_break != tie ||
          !(r.group == "layer" || r.group == "any (N:M)")) {
        continue;
      }
      const SimRow* c = find(r, "centralized-wanda", "", "", false, "");
      const SimRow* l = find(r, "local-only", "", "", false, "");
      const bool whole = whole_available && !r.full_ppl.empty();
      (r.group == "layer" ? unstructured : structured) = true;
      std::vector<std::string> parts;
      for (const std::string& e : table.eval_names) {
        const CellValues* v = Values(r, e, whole);
        if (v == nullptr) continue;
        if (c != nullptr && Values(*c, e, whole) != nullptr) {
          const CellValues& cv = *Values(*c, e, whole);
          const double g = v->mean() / cv.mean() - 1;
          gap.Add(g);
          own_spread.Add(HalfRange(*v));
          cen_spread.Add(HalfRange(cv));
          ++cells;
          if (std::abs(g) <= 0.01) ++within;
          // Resolved: the gap is larger than the two cells' seed spreads together.
          if (std::abs(g) > HalfRange(*v) + HalfRange(cv)) ++(g > 0 ? above : below);
          if (whole) {
            parts.push_back(absl::StrFormat("%s %+.1f%% (±%.1f%% vs ±%.1f%%)", e, g * 100, HalfRange(*v) * 100,
                                            HalfRange(cv) * 100));
          }
        }
        if (l != nullptr && Values(*l, e, whole) != nullptr) {
          const CellValues& lv = *Values(*l, e, whole);
          ++local_cells;
          local_gap.Add(v->mean() / lv.mean() - 1);
          if (v->mean() < lv.mean()) ++beats;
          if (v->max() < lv.min()) ++beats_all;
        }
      }
      if (!parts.empty()) {
        detail.push_back(absl::StrCat("  - ", r.calibration, ", ", r.pattern, ", ", r.clients,
                                      " clients (whole texts): ", absl::StrJoin(parts, "; ")));
      }
    }
    if (cells == 0) continue;
    const char* group_label = structured && unstructured ? "layer (N:M: any)" : structured ? "any (N:M)" : "layer";
    out << "- **One-shot, " << group_label << ", no scaling (tie-break " << tie
        << ") vs centralized Wanda:** within 1% in " << within << " of " << cells
        << " (calibration, pattern, clients, eval) cells" << (whole_available ? " (whole texts where the row has them)" : "")
        << "; the gap ranges " << gap.SignedPercent() << ". Seed spread (half the range over runs) of those cells: "
        << "one-shot " << own_spread.Percent() << ", centralized " << cen_spread.Percent() << ". The gap exceeds "
        << "the two spreads together in " << (above + below) << " of " << cells << " cells (one-shot worse in "
        << above << ", better in " << below << "); in the other " << (cells - above - below)
        << " it is within the seed noise.\n";
    for (const std::string& d : detail) out << d << "\n";
    if (local_cells > 0) {
      out << "- **Same rows vs local-only** (each client's own masks): lower mean perplexity in " << beats << " of "
          << local_cells << " cells, below every local-only run in " << beats_all << "; change vs local-only mean "
          << local_gap.SignedPercent() << ".\n";
    }
  }
  // Scaling vs none, per group and pattern kind: where does it help?
  std::map<std::string, std::pair<int, int>> scaling_help;  // group -> (clearly lower, pairs)
  std::map<std::string, Range> scaling_change;
  for (const SimRow& r : table.rows) {
    if (r.method != "fedprllm" || r.strategy != "one-shot" || !r.scaling) continue;
    const SimRow* u = find(r, "fedprllm", "one-shot", r.group, false, r.tie_break);
    if (u == nullptr) continue;
    for (const std::string& e : table.eval_names) {
      const CellValues& a = r.ppl.at(e);
      const CellValues& b = u->ppl.at(e);
      const double change = a.mean() / b.mean() - 1;
      auto& [lower, pairs] = scaling_help[r.group];
      ++pairs;
      // Clearly lower: the scaled mean is below the unscaled cell's whole range.
      if (a.mean() < b.min()) ++lower;
      scaling_change[r.group].Add(change);
    }
  }
  for (const auto& [group, counts] : scaling_help) {
    out << "- **Weight scaling, " << group << " group:** perplexity below the unscaled cell's whole seed range in "
        << counts.first << " of " << counts.second << " (calibration, pattern, clients, eval, tie-break) cells; change "
        << scaling_change[group].SignedPercent() << ".\n";
  }
  // Tie-breaks against the magnitude rule, per group.
  std::map<std::string, std::map<std::string, Range>> tie_change;  // tie -> group -> change
  for (const SimRow& r : table.rows) {
    if (r.method != "fedprllm" || r.strategy != "one-shot" || r.tie_break == "magnitude") continue;
    const SimRow* m = find(r, "fedprllm", "one-shot", r.group, r.scaling, "magnitude");
    if (m == nullptr) continue;
    for (const std::string& e : table.eval_names) {
      tie_change[r.tie_break][r.group].Add(r.ppl.at(e).mean() / m->ppl.at(e).mean() - 1);
    }
  }
  for (const auto& [tie, groups] : tie_change) {
    std::vector<std::string> parts;
    for (const auto& [group, change] : groups) parts.push_back(absl::StrCat(group, " ", change.SignedPercent()));
    out << "- **Tie-break " << tie << " vs magnitude** (one-shot, change in mean perplexity): "
        << absl::StrJoin(parts, "; ") << ".\n";
  }
  return out.str();
}

absl::StatusOr<std::vector<SweepPoint>> RunSweep(const SimSettings& s, const std::vector<double>& sparsities,
                                                 const SimLog& log) {
  RETURN_IF_ERROR(s.Validate());
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(s.model_path, s.tokenizer_path));
  LlamaModel base = std::move(loaded.model);
  Tokenizer tokenizer = std::move(loaded.tokenizer);
  RETURN_IF_ERROR(CheckWindowsFitModel(s, base, /*evaluates=*/true));
  const CalibrationReadOptions read{base.config().vocab_size, log};
  ASSIGN_OR_RETURN(std::vector<int> eval_tokens,
                   ReadPartTokens({s.evals.front().source}, s.evals.front().part, tokenizer, read));
  PerplexityOptions eval_options;
  eval_options.seqlen = s.eval_seqlen;
  eval_options.max_windows = s.eval_max_windows;
  eval_options.compute = s.compute;
  Evaluator evaluator({eval_tokens}, eval_options, s.eval_cache_dir);
  ASSIGN_OR_RETURN(PreparedCalibration calib, PrepareCalibration(s.calibrations.front(), tokenizer, s.split, read));
  const int clients = ClientCounts(s).front();
  const uint64_t seed = s.seeds.front();
  const uint64_t split_seed = s.split_seeds.empty() ? seed : s.split_seeds.front();
  ASSIGN_OR_RETURN(auto drawn, DrawClientSamples(s, calib, clients, seed, split_seed));
  std::vector<SweepPoint> points(sparsities.size());
  std::mutex log_mutex;
  auto run_point = [&](int64_t index) -> absl::Status {
    SparsityPattern pattern;
    pattern.sparsity = sparsities[index];
    RETURN_IF_ERROR(pattern.Validate());
    const LocalPruneOptions local = ClientPruneOptions(pattern, s.compute);
    SweepPoint& point = points[index];
    point.sparsity = pattern.sparsity;
    LocalPruneOptions magnitude = local;  // Wanda's magnitude baseline: per matrix, as in the table
    magnitude.metric = PruneMetric::kMagnitude;
    magnitude.group = ComparisonGroup::kLayer;
    ASSIGN_OR_RETURN(LlamaModel mag, PruneModel(base, drawn.first, magnitude, nullptr));
    ASSIGN_OR_RETURN(auto mag_ppl, evaluator.Evaluate(mag));
    point.magnitude = mag_ppl[0];
    ASSIGN_OR_RETURN(LlamaModel cen, PruneModel(base, drawn.first, local, nullptr));
    ASSIGN_OR_RETURN(auto cen_ppl, evaluator.Evaluate(cen));
    point.centralized = cen_ppl[0];
    ASSIGN_OR_RETURN(auto masks, ComputeClientMasks(base, drawn.second, local));
    AggregationOptions agg;
    agg.group = ComparisonGroup::kLayer;
    agg.pattern = pattern;
    agg.seed = split_seed;
    ASSIGN_OR_RETURN(LlamaModel fed, AggregateOneShot(base, masks, agg));
    ASSIGN_OR_RETURN(auto fed_ppl, evaluator.Evaluate(fed));
    point.fedprllm = fed_ppl[0];
    double sum = 0;
    int counted = 0;
    for (const auto& client : masks) {
      if (s.local_only_max_clients > 0 && counted >= s.local_only_max_clients) break;
      ASSIGN_OR_RETURN(LlamaModel m, LocalOnlyModel(base, client, pattern));
      ASSIGN_OR_RETURN(auto ppl, evaluator.Evaluate(m));
      sum += ppl[0];
      ++counted;
    }
    point.local_only_mean = sum / counted;
    if (log) {
      std::lock_guard<std::mutex> lock(log_mutex);
      log(absl::StrFormat("sweep sparsity %.2f: magnitude %.2f, centralized %.2f, fedprllm %.2f, local-only %.2f",
                          point.sparsity, point.magnitude, point.centralized, point.fedprllm, point.local_only_mean));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RunJobs(static_cast<int64_t>(sparsities.size()), JobThreads(s, base), run_point));
  return points;
}

absl::Status WriteSweepPlot(const std::vector<SweepPoint>& points, const std::string& eval_name,
                            const std::string& dir, const std::string& model_name) {
  namespace fs = std::filesystem;
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    return absl::FailedPreconditionError("gnuplot is not installed (apt-get install gnuplot-nox); cannot draw the sweep plot");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string dat = (fs::path(dir) / "sparsity_sweep.dat").string();
  const std::string gp = (fs::path(dir) / "sparsity_sweep.gp").string();
  const std::string png = (fs::path(dir) / "sparsity_sweep.png").string();
  {
    std::ofstream f(dat);
    f << "# sparsity magnitude centralized_wanda fedprllm_one_shot_layer local_only_mean\n";
    for (const SweepPoint& p : points) {
      f << absl::StrFormat("%.2f %.4f %.4f %.4f %.4f\n", p.sparsity, p.magnitude, p.centralized, p.fedprllm,
                           p.local_only_mean);
    }
    if (!f) return absl::InternalError(absl::StrCat("writing ", dat));
  }
  {
    std::ofstream f(gp);
    f << "set terminal pngcairo size 900,600 enhanced font 'DejaVu Sans,11'\n"
      << "set output '" << png << "'\n"
      << "set title '" << model_name << ": perplexity vs unstructured sparsity (" << eval_name << ")'\n"
      << "set xlabel 'sparsity'\nset ylabel 'perplexity (log scale)'\nset logscale y\nset grid\n"
      << "set key top left\n"
      << "plot '" << dat << "' using 1:2 with linespoints lw 2 title 'magnitude', \\\n"
      << "     '' using 1:3 with linespoints lw 2 title 'centralized Wanda', \\\n"
      << "     '' using 1:4 with linespoints lw 2 title 'FedPrLLM one-shot, layer', \\\n"
      << "     '' using 1:5 with linespoints lw 2 title 'local-only (mean over clients)'\n";
    if (!f) return absl::InternalError(absl::StrCat("writing ", gp));
  }
  const std::string command = absl::StrCat("gnuplot '", gp, "'");
  if (std::system(command.c_str()) != 0) return absl::InternalError(absl::StrCat("gnuplot failed: ", command));
  return absl::OkStatus();
}

}  // namespace fedprllm
