// fedprllm-sim: FedPrLLM's quality table (and the sparsity sweep plot) for a model and its
// calibration data, with C clients simulated in one process through the daemons' engine.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "sim/simulation.h"
#include "tools/tool_flags.h"

ABSL_FLAG(std::string, model, "", "Model: Hugging Face directory or llama2.c .bin (required)");
ABSL_FLAG(std::string, tokenizer, "", "SentencePiece .model (default: found beside the model)");
ABSL_FLAG(std::vector<std::string>, calib, {},
          "Calibration sets, comma-separated: name=SOURCE[@first-half|@second-half], SOURCE as for "
          "fedprllm-prune --calib (file.txt, file.jsonl:f1+f2, file.npy, file.bin:uint16); several sources "
          "of one set joined with '|' (required)");
ABSL_FLAG(std::vector<std::string>, eval, {},
          "Evaluation texts, comma-separated: name=SOURCE[@first-half|@second-half] (required)");
ABSL_FLAG(std::vector<std::string>, clients, std::vector<std::string>({"64", "8", "16"}), "Client counts");
ABSL_FLAG(std::string, split, "even", "even (shuffled, nsamples/C each) or by-file (one file per client)");
ABSL_FLAG(int64_t, nsamples, 128, "Total calibration windows over all clients");
ABSL_FLAG(int64_t, seqlen, 256, "Tokens per calibration window");
ABSL_FLAG(std::vector<std::string>, seeds, std::vector<std::string>({"0", "1", "2"}),
          "Seeds of the calibration window draw (and, without --split_seeds, of the client split)");
ABSL_FLAG(std::vector<std::string>, split_seeds, {},
          "Seeds of the client split and the random tie-break; when given, the runs are every (draw seed, split "
          "seed) pair: --seeds 0,1,2 --split_seeds 0 varies only the draw, --seeds 0 --split_seeds 0,1,2 only the "
          "split (default: each run's draw seed)");
ABSL_FLAG(double, sparsity, 0.5, "Unstructured sparsity");
ABSL_FLAG(std::vector<std::string>, patterns, std::vector<std::string>({"unstructured", "2:4"}), "Patterns");
ABSL_FLAG(std::vector<std::string>, groups, std::vector<std::string>({"layer", "row", "column"}), "One-shot groups");
ABSL_FLAG(std::vector<std::string>, strategies, std::vector<std::string>({"one-shot", "iterative"}), "Strategies");
ABSL_FLAG(std::vector<std::string>, scaling, std::vector<std::string>({"no", "yes"}), "Weight scaling settings");
ABSL_FLAG(std::vector<std::string>, tie_breaks, std::vector<std::string>({"magnitude", "random"}), "Tie-breaks");
ABSL_FLAG(int64_t, eval_seqlen, 256, "Tokens per evaluation window");
ABSL_FLAG(int64_t, eval_max_windows, 0,
          "Evaluation windows per text: 0 = every window of the whole text; N = the first N, the same for every cell");
ABSL_FLAG(bool, full_headline, true,
          "With --eval_max_windows: also score the headline rows (dense, magnitude, centralized, local-only and "
          "one-shot layer without scaling at --headline_clients clients) on the whole texts");
ABSL_FLAG(std::vector<std::string>, full_headline_groups, std::vector<std::string>({"layer"}),
          "The one-shot groups of the headline rows scored on whole texts");
ABSL_FLAG(std::vector<std::string>, full_headline_tie_breaks, std::vector<std::string>({"magnitude", "index"}),
          "The tie-breaks of the headline one-shot rows scored on whole texts");
ABSL_FLAG(std::string, eval_cache, "",
          "Directory shared by the runs of one build that stores every evaluation by (model SHA-256, tokens, "
          "windows, device, dtype), so a bit-identical model scored by another run is read back (created if "
          "missing; default: none)");
ABSL_FLAG(int, headline_clients, 64, "Client count of the headline rows' one-shot and local-only cells");
ABSL_FLAG(int, full_local_only_clients, 1, "Headline local-only cells on whole texts: clients per run");
ABSL_FLAG(std::string, model_name, "", "The model's name in the sweep plot's title (default: the file's stem)");
ABSL_FLAG(int, jobs, 0, "Jobs at once (0 = one per core for small CPU models, else 1)");
ABSL_FLAG(int, local_only_max_clients, 0, "Local-only: evaluate at most this many clients per count and seed (0 = all)");
ABSL_FLAG(std::string, out, "", "Output directory for table.md, results.csv, findings.md (required)");
ABSL_FLAG(bool, table, true, "Compute the quality table");
ABSL_FLAG(bool, sweep, false, "Also run the sparsity sweep (0.1..0.8) and plot sparsity_sweep.png");
ABSL_FLAG(std::string, device, "auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "", "Compute dtype (default: the model's)");

namespace fedprllm {
namespace {

template <typename T, typename Parse>
absl::StatusOr<std::vector<T>> ParseList(const std::vector<std::string>& items, const char* flag, Parse parse) {
  std::vector<T> out;
  for (const std::string& item : items) {
    auto value = parse(item);
    if (!value.ok()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", value.status().message()));
    out.push_back(*value);
  }
  return out;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  return f ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}

absl::Status Run() {
  SimSettings s;
  s.model_path = absl::GetFlag(FLAGS_model);
  s.tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  RETURN_IF_ERROR(CheckListFlagFields(absl::GetFlag(FLAGS_calib), "--calib"));
  RETURN_IF_ERROR(CheckListFlagFields(absl::GetFlag(FLAGS_eval), "--eval"));
  for (const std::string& spec : absl::GetFlag(FLAGS_calib)) {
    ASSIGN_OR_RETURN(CalibrationSet set, ParseCalibrationSet(spec));
    s.calibrations.push_back(std::move(set));
  }
  for (const std::string& spec : absl::GetFlag(FLAGS_eval)) {
    ASSIGN_OR_RETURN(EvalText e, ParseEvalText(spec));
    s.evals.push_back(std::move(e));
  }
  auto int_parse = [](const std::string& t) -> absl::StatusOr<int64_t> {
    int64_t v;
    if (!absl::SimpleAtoi(t, &v)) return absl::InvalidArgumentError(absl::StrCat("\"", t, "\" is not an integer"));
    return v;
  };
  ASSIGN_OR_RETURN(auto clients, ParseList<int64_t>(absl::GetFlag(FLAGS_clients), "clients", int_parse));
  s.clients.assign(clients.begin(), clients.end());
  ASSIGN_OR_RETURN(auto seeds, ParseList<int64_t>(absl::GetFlag(FLAGS_seeds), "seeds", int_parse));
  s.seeds.assign(seeds.begin(), seeds.end());
  ASSIGN_OR_RETURN(auto split_seeds, ParseList<int64_t>(absl::GetFlag(FLAGS_split_seeds), "split_seeds", int_parse));
  s.split_seeds.assign(split_seeds.begin(), split_seeds.end());
  ASSIGN_OR_RETURN(s.split, ParseSplitMode(absl::GetFlag(FLAGS_split)));
  s.nsamples = absl::GetFlag(FLAGS_nsamples);
  s.seqlen = absl::GetFlag(FLAGS_seqlen);
  const double sparsity = absl::GetFlag(FLAGS_sparsity);
  ASSIGN_OR_RETURN(s.patterns, ParseList<SparsityPattern>(absl::GetFlag(FLAGS_patterns), "patterns",
                                                          [&](const std::string& t) { return SparsityPattern::Parse(t, sparsity); }));
  ASSIGN_OR_RETURN(s.groups, ParseList<ComparisonGroup>(absl::GetFlag(FLAGS_groups), "groups",
                                                        [](const std::string& t) { return ParseComparisonGroup(t); }));
  ASSIGN_OR_RETURN(s.strategies, ParseList<Strategy>(absl::GetFlag(FLAGS_strategies), "strategies",
                                                     [](const std::string& t) { return ParseStrategy(t); }));
  ASSIGN_OR_RETURN(s.tie_breaks, ParseList<TieBreak>(absl::GetFlag(FLAGS_tie_breaks), "tie_breaks",
                                                     [](const std::string& t) { return ParseTieBreak(t); }));
  ASSIGN_OR_RETURN(s.scalings, ParseList<bool>(absl::GetFlag(FLAGS_scaling), "scaling",
                                               [](const std::string& t) -> absl::StatusOr<bool> {
                                                 if (t == "yes") return true;
                                                 if (t == "no") return false;
                                                 return absl::InvalidArgumentError("expected yes or no");
                                               }));
  s.eval_seqlen = absl::GetFlag(FLAGS_eval_seqlen);
  s.eval_max_windows = absl::GetFlag(FLAGS_eval_max_windows);
  s.full_headline = absl::GetFlag(FLAGS_full_headline);
  ASSIGN_OR_RETURN(s.full_headline_groups,
                   ParseList<ComparisonGroup>(absl::GetFlag(FLAGS_full_headline_groups), "full_headline_groups",
                                              [](const std::string& t) { return ParseComparisonGroup(t); }));
  ASSIGN_OR_RETURN(s.full_headline_tie_breaks,
                   ParseList<TieBreak>(absl::GetFlag(FLAGS_full_headline_tie_breaks), "full_headline_tie_breaks",
                                       [](const std::string& t) { return ParseTieBreak(t); }));
  s.eval_cache_dir = absl::GetFlag(FLAGS_eval_cache);
  if (!s.eval_cache_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(s.eval_cache_dir, error);
    if (error) {
      return absl::InvalidArgumentError(
          absl::StrCat("--eval_cache: cannot create ", s.eval_cache_dir, ": ", error.message()));
    }
  }
  s.headline_clients = absl::GetFlag(FLAGS_headline_clients);
  s.full_local_only_clients = absl::GetFlag(FLAGS_full_local_only_clients);
  s.local_only_max_clients = absl::GetFlag(FLAGS_local_only_max_clients);
  s.jobs = absl::GetFlag(FLAGS_jobs);
  ASSIGN_OR_RETURN(s.compute, ParseComputeOptions(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_dtype)));
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  std::filesystem::create_directories(out);
  auto log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  if (absl::GetFlag(FLAGS_table)) {
    ASSIGN_OR_RETURN(SimTable table, RunSimulation(s, log));
    RETURN_IF_ERROR(WriteFile(out + "/table.md", FormatMarkdown(s, table)));
    RETURN_IF_ERROR(WriteFile(out + "/results.csv", FormatCsv(table)));
    RETURN_IF_ERROR(WriteFile(out + "/findings.md", FormatFindings(table)));
    // For scripts that merge several runs: evaluations, cells asked for, seconds.
    RETURN_IF_ERROR(WriteFile(out + "/stats.txt", absl::StrCat("evaluations ", table.models_evaluated, "\nrequests ",
                                                                table.evaluation_requests, "\nseconds ",
                                                                static_cast<int64_t>(table.seconds), "\n")));
    std::printf("table: %zu rows, %lld evaluations for %lld cells (cache hit rate %.1f%%) in %.1fs -> %s\n",
                table.rows.size(), static_cast<long long>(table.models_evaluated),
                static_cast<long long>(table.evaluation_requests),
                table.evaluation_requests > 0
                    ? 100.0 * (table.evaluation_requests - table.models_evaluated) / table.evaluation_requests
                    : 0.0,
                table.seconds, out.c_str());
  }
  if (absl::GetFlag(FLAGS_sweep)) {
    std::vector<double> sparsities;
    for (int i = 1; i <= 8; ++i) sparsities.push_back(i / 10.0);
    ASSIGN_OR_RETURN(auto points, RunSweep(s, sparsities, log));
    std::string model_name = absl::GetFlag(FLAGS_model_name);
    if (model_name.empty()) model_name = std::filesystem::path(s.model_path).stem().string();
    RETURN_IF_ERROR(WriteSweepPlot(points, s.evals.front().name, out, model_name));
    std::printf("sweep: %zu points -> %s/sparsity_sweep.png\n", points.size(), out.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, 
      "fedprllm-sim --model M --calib name=FILE[@second-half] --eval name=FILE[@first-half] --clients 64,8,16 "
      "--nsamples 128 --seqlen 256 --seeds 0,1,2 --patterns unstructured,2:4 --out DIR [--sweep]");
  fedprllm::UseAllCores();
  return fedprllm::ExitWith(fedprllm::Run(), "fedprllm-sim");
}
