// fedprllm-sim's building blocks on the bundled stories260K model: the even split, the
// simulator's one-shot path against RunInProcessFederation, local-only against centralized
// Wanda, and the rows of a small table.
#include "sim/simulation.h"

#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"

#include "engine/prune_job.h"
#include "model/perplexity.h"
#include "model/test_paths.h"

namespace fedprllm {
namespace {

class SimTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = LlamaModel::Load(testing::BundledModel());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = new LlamaModel(*std::move(model));
    auto tokenizer = Tokenizer::Load(testing::BundledTokenizer());
    ASSERT_TRUE(tokenizer.ok());
    auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
    ASSERT_TRUE(text.ok());
    auto tokens = tokenizer->Encode(SplitHalves(*text).second, true);
    ASSERT_TRUE(tokens.ok());
    auto samples = SampleWindows(*tokens, {8, 64, 0});
    ASSERT_TRUE(samples.ok());
    samples_ = new at::Tensor(*samples);
  }
  static void ExpectSameModel(const LlamaModel& a, const LlamaModel& b) {
    ASSERT_EQ(a.tensors().size(), b.tensors().size());
    for (const auto& [name, t] : a.tensors()) {
      EXPECT_TRUE(at::equal(t, b.tensors().at(name))) << name;
    }
  }
  static LlamaModel* model_;
  static at::Tensor* samples_;
};
LlamaModel* SimTest::model_ = nullptr;
at::Tensor* SimTest::samples_ = nullptr;

TEST_F(SimTest, EvenSplitIsDisjointAndCoversAllSamples) {
  const at::Tensor rows = at::arange(12, at::kLong).reshape({12, 1}).repeat({1, 3});
  auto split = EvenSplit(rows, 4, 7);
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_EQ(split->size(), 4u);
  std::multiset<int64_t> seen;
  for (const at::Tensor& part : *split) {
    ASSERT_EQ(part.size(0), 3);
    for (int64_t i = 0; i < 3; ++i) seen.insert(part[i][0].item<int64_t>());
  }
  EXPECT_EQ(seen, (std::multiset<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  auto again = EvenSplit(rows, 4, 7);
  auto other = EvenSplit(rows, 4, 8);
  ASSERT_TRUE(again.ok() && other.ok());
  bool differs = false;
  for (int c = 0; c < 4; ++c) {
    EXPECT_TRUE(at::equal((*split)[c], (*again)[c]));
    differs |= !at::equal((*split)[c], (*other)[c]);
  }
  EXPECT_TRUE(differs) << "another seed should deal the samples differently";
  EXPECT_FALSE(EvenSplit(rows, 5, 0).ok());
}

TEST_F(SimTest, OneShotEqualsInProcessFederationBitForBit) {
  auto split = EvenSplit(*samples_, 4, 1);
  ASSERT_TRUE(split.ok());
  const SparsityPattern pattern{0.5, 0, 0};
  const LocalPruneOptions local = ClientPruneOptions(pattern, {});
  auto masks = ComputeClientMasks(*model_, *split, local);
  ASSERT_TRUE(masks.ok()) << masks.status();
  for (bool scaling : {false, true}) {
    FederationOptions fed;
    fed.aggregation.group = ComparisonGroup::kLayer;
    fed.aggregation.pattern = pattern;
    fed.aggregation.weight_scaling = scaling;
    fed.aggregation.tie_break = TieBreak::kRandom;
    fed.aggregation.seed = 1;
    fed.local = local;
    auto reference = RunInProcessFederation(*model_, *split, fed);
    ASSERT_TRUE(reference.ok()) << reference.status();
    auto simulated = AggregateOneShot(*model_, *masks, fed.aggregation);
    ASSERT_TRUE(simulated.ok()) << simulated.status();
    ExpectSameModel(*simulated, *reference);
  }
}

TEST_F(SimTest, LocalOnlyWithOneClientEqualsCentralizedWanda) {
  for (const SparsityPattern& pattern : {SparsityPattern{0.5, 0, 0}, SparsityPattern{0.5, 2, 4}}) {
    const LocalPruneOptions local = ClientPruneOptions(pattern, {});
    auto masks = ComputeClientMasks(*model_, {*samples_}, local);
    ASSERT_TRUE(masks.ok());
    auto local_only = LocalOnlyModel(*model_, (*masks)[0], pattern);
    ASSERT_TRUE(local_only.ok()) << local_only.status();
    auto centralized = PruneModel(*model_, *samples_, local, nullptr);
    ASSERT_TRUE(centralized.ok());
    ExpectSameModel(*local_only, *centralized);
  }
}

// The bundled model, calibrated on TinyStories' second half, evaluated on its first.
void TinyStoriesSettings(SimSettings* s) {
  s->model_path = testing::BundledModel();
  auto calib = ParseCalibrationSet("ts=" + testing::SharedData("tinystories/tinystories_val.txt") + "@second-half");
  auto eval = ParseEvalText("ts=" + testing::SharedData("tinystories/tinystories_val.txt") + "@first-half");
  ASSERT_TRUE(calib.ok() && eval.ok());
  s->calibrations = {*calib};
  s->evals = {*eval};
}

TEST_F(SimTest, SmallTableHasTheExpectedRows) {
  SimSettings s;
  ASSERT_NO_FATAL_FAILURE(TinyStoriesSettings(&s));
  s.clients = {2};
  s.nsamples = 4;
  s.seqlen = 32;
  s.seeds = {0, 1};
  s.eval_seqlen = 32;
  s.eval_max_windows = 2;
  s.full_headline = false;
  auto table = RunSimulation(s);
  ASSERT_TRUE(table.ok()) << table.status();
  // Per pattern: dense, magnitude per matrix (and per row, unstructured only), centralized,
  // local-only, then per tie-break the one-shot rows (3 groups x 2 scalings unstructured;
  // 1 x 2 for 2:4) and one iterative row.
  ASSERT_EQ(table->rows.size(), (5 + 2 * (6 + 1)) + (4 + 2 * (2 + 1)));
  const SimRow& dense = table->rows[0];
  EXPECT_EQ(dense.method, "dense");
  EXPECT_EQ(dense.ppl.at("ts").values.size(), 1u);
  EXPECT_EQ(table->rows[1].method, "magnitude");
  EXPECT_EQ(table->rows[1].Label(), "Magnitude (per matrix)");
  EXPECT_EQ(table->rows[2].method, "magnitude-row");
  EXPECT_EQ(table->rows[3].method, "centralized-wanda");
  EXPECT_EQ(table->rows[3].ppl.at("ts").values.size(), 2u);  // seeds
  EXPECT_EQ(table->rows[4].method, "local-only");
  EXPECT_EQ(table->rows[4].ppl.at("ts").values.size(), 4u);  // 2 clients x 2 seeds
  for (const SimRow& row : table->rows) {
    EXPECT_GT(row.ppl.at("ts").mean(), 1.0) << row.Label();
    if (row.method != "dense") EXPECT_GT(row.ppl.at("ts").min(), dense.ppl.at("ts").mean() * 0.5) << row.Label();
  }
  const std::string md = FormatMarkdown(s, *table);
  EXPECT_NE(md.find("| FedPrLLM one-shot, column, scaling, tie: random | 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| FedPrLLM iterative, layer, no scaling, tie: magnitude | 2 |"), std::string::npos) << md;
  const std::string csv = FormatCsv(*table);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + static_cast<long>(table->rows.size()));
  EXPECT_NE(FormatFindings(*table).find("centralized Wanda"), std::string::npos);
}

TEST_F(SimTest, ExactRowsMatchCentralizedWanda) {
  SimSettings s;
  ASSERT_NO_FATAL_FAILURE(TinyStoriesSettings(&s));
  s.clients = {4};
  s.nsamples = 8;
  s.seqlen = 32;
  s.seeds = {0};
  s.patterns = {SparsityPattern{0.5, 0, 0}};
  s.strategies = {Strategy::kExact};
  s.eval_seqlen = 32;
  s.eval_max_windows = 4;
  s.full_headline = false;
  auto table = RunSimulation(s);
  ASSERT_TRUE(table.ok()) << table.status();
  const SimRow* centralized = nullptr;
  const SimRow* exact = nullptr;
  for (const SimRow& row : table->rows) {
    if (row.method == "centralized-wanda") centralized = &row;
    if (row.strategy == "exact") exact = &row;
  }
  ASSERT_NE(centralized, nullptr);
  ASSERT_NE(exact, nullptr);
  EXPECT_EQ(exact->Label(), "FedPrLLM exact (pooled statistics), row");
  // The sim's centralized row accumulates in float32: equal up to near-ties.
  EXPECT_NEAR(exact->ppl.at("ts").mean(), centralized->ppl.at("ts").mean(), 1e-3 * centralized->ppl.at("ts").mean());
}

// TinyStoriesSettings with one evaluation text "small": the first 3,000 characters of the
// held-out TinyStories half, written to *eval_path in a new temporary directory *dir.
void SmallEvalSettings(const std::string& tag, std::string* dir, std::string* eval_path, SimSettings* s) {
  auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
  ASSERT_TRUE(text.ok());
  *dir = ::testing::TempDir() + "fedprllm-sim-" + tag + "-XXXXXX";
  ASSERT_NE(::mkdtemp(dir->data()), nullptr);
  *eval_path = *dir + "/eval.txt";
  std::ofstream(*eval_path) << SplitHalves(*text).first.substr(0, 3000);
  ASSERT_NO_FATAL_FAILURE(TinyStoriesSettings(s));
  s->evals = {*ParseEvalText("small=" + *eval_path)};
}

// Runs vary the draw or the split as asked; a capped table scores its headline rows on the
// whole text too; a bit-identical model (one client's local-only = centralized) is evaluated once.
TEST_F(SimTest, SeedsWholeTextsAndTheEvaluationCache) {
  std::string dir, eval_path;
  SimSettings s;
  ASSERT_NO_FATAL_FAILURE(SmallEvalSettings("eval", &dir, &eval_path, &s));
  s.clients = {1};
  s.headline_clients = 1;
  s.nsamples = 1;  // one window: the split's shuffle keeps the one client's samples as drawn
  s.seqlen = 32;
  s.seeds = {0};
  s.split_seeds = {0, 1};
  s.patterns = {SparsityPattern{0.5, 0, 0}};
  s.groups = {ComparisonGroup::kLayer};
  s.scalings = {false};
  s.tie_breaks = {TieBreak::kSmallerMagnitude};
  s.strategies = {Strategy::kOneShot};
  s.eval_seqlen = 32;
  s.eval_max_windows = 2;
  auto table = RunSimulation(s);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_NE(table->runs.find("client split only"), std::string::npos) << table->runs;
  ASSERT_EQ(table->eval_windows, std::vector<int64_t>{2});
  auto tokens = TokenizeCalibrationSources(*Tokenizer::Load(testing::BundledTokenizer()),
                                           {*ParseCalibrationSource(eval_path)}, {512, nullptr});
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(table->full_windows, std::vector<int64_t>{static_cast<int64_t>(tokens->size()) / 32});
  ASSERT_GT(table->full_windows[0], 2);
  const SimRow *dense = nullptr, *centralized = nullptr, *local = nullptr, *one_shot = nullptr;
  for (const SimRow& row : table->rows) {
    if (row.method == "dense") dense = &row;
    if (row.method == "centralized-wanda") centralized = &row;
    if (row.method == "local-only") local = &row;
    if (row.method == "fedprllm") one_shot = &row;
    if (row.method == "magnitude-row") EXPECT_TRUE(row.full_ppl.empty());
  }
  ASSERT_TRUE(dense && centralized && local && one_shot);
  // The split does not change centralized Wanda: one value for the one draw seed.
  EXPECT_EQ(centralized->ppl.at("small").values.size(), 1u);
  EXPECT_EQ(one_shot->ppl.at("small").values.size(), 2u);
  for (const SimRow* row : {dense, centralized, local, one_shot}) {
    ASSERT_EQ(row->full_ppl.count("small"), 1u) << row->Label();
  }
  PerplexityOptions whole;
  whole.seqlen = 32;
  auto dense_whole = EvaluatePerplexity(*model_, *tokens, whole);
  ASSERT_TRUE(dense_whole.ok());
  EXPECT_DOUBLE_EQ(dense->full_ppl.at("small").mean(), dense_whole->perplexity);
  whole.max_windows = 2;
  auto dense_capped = EvaluatePerplexity(*model_, *tokens, whole);
  ASSERT_TRUE(dense_capped.ok());
  EXPECT_DOUBLE_EQ(dense->ppl.at("small").mean(), dense_capped->perplexity);
  // One client: local-only and one-shot are centralized Wanda's model, scored once per window set.
  EXPECT_EQ(local->ppl.at("small").values, std::vector<double>(2, centralized->ppl.at("small").mean()));
  EXPECT_EQ(one_shot->full_ppl.at("small").values,
            std::vector<double>(2, centralized->full_ppl.at("small").mean()));
  EXPECT_GT(table->evaluation_requests, table->models_evaluated);
  const std::string md = FormatMarkdown(s, *table);
  EXPECT_NE(md.find("cache hit rate"), std::string::npos) << md;
  EXPECT_NE(md.find(absl::StrCat("small ", table->full_windows[0])), std::string::npos) << md;
  const std::string csv = FormatCsv(*table);
  EXPECT_NE(csv.find(absl::StrCat(",small,", table->full_windows[0], ",")), std::string::npos) << csv;

  s.seeds = {0, 1};
  s.split_seeds = {3};
  s.full_headline = false;
  auto by_draw = RunSimulation(s);
  ASSERT_TRUE(by_draw.ok()) << by_draw.status();
  EXPECT_NE(by_draw->runs.find("calibration draw only"), std::string::npos) << by_draw->runs;
  for (const SimRow& row : by_draw->rows) {
    EXPECT_TRUE(row.full_ppl.empty()) << row.Label();
    if (row.method == "centralized-wanda") EXPECT_EQ(row.ppl.at("small").values.size(), 2u);
  }
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

// A second run with the same evaluation cache directory reads every evaluation back (no model
// scored again) and gives the same numbers; a run on other windows scores its own. The whole-
// text headline rows are the listed one-shot groups and tie-breaks only.
TEST_F(SimTest, AnEvaluationCacheDirectoryIsSharedByRuns) {
  std::string dir, eval_path;
  SimSettings s;
  ASSERT_NO_FATAL_FAILURE(SmallEvalSettings("cache", &dir, &eval_path, &s));
  s.clients = {2};
  s.headline_clients = 2;
  s.nsamples = 2;
  s.seqlen = 32;
  s.seeds = {0};
  s.patterns = {SparsityPattern{0.5, 0, 0}};
  s.groups = {ComparisonGroup::kLayer, ComparisonGroup::kColumn};
  s.scalings = {false};
  s.tie_breaks = {TieBreak::kSmallerMagnitude, TieBreak::kIndex};
  s.strategies = {Strategy::kOneShot};
  s.eval_seqlen = 32;
  s.eval_max_windows = 2;
  s.full_headline_groups = {ComparisonGroup::kColumn};
  s.full_headline_tie_breaks = {TieBreak::kIndex};
  s.eval_cache_dir = dir + "/cache";
  std::filesystem::create_directories(s.eval_cache_dir);
  auto first = RunSimulation(s);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_GT(first->models_evaluated, 0);
  for (const SimRow& row : first->rows) {
    if (row.method != "fedprllm") continue;
    EXPECT_EQ(!row.full_ppl.empty(), row.group == "column" && row.tie_break == "index") << row.Label();
  }
  auto second = RunSimulation(s);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->models_evaluated, 0);
  EXPECT_EQ(second->evaluation_requests, first->evaluation_requests);
  EXPECT_EQ(second->full_windows, first->full_windows);
  ASSERT_EQ(second->rows.size(), first->rows.size());
  for (size_t i = 0; i < first->rows.size(); ++i) {
    EXPECT_EQ(second->rows[i].ppl.at("small").values, first->rows[i].ppl.at("small").values)
        << first->rows[i].Label();
    EXPECT_EQ(second->rows[i].full_ppl.size(), first->rows[i].full_ppl.size());
    for (const auto& [name, values] : first->rows[i].full_ppl) {
      EXPECT_EQ(second->rows[i].full_ppl.at(name).values, values.values) << first->rows[i].Label();
    }
  }
  s.eval_max_windows = 1;  // another window set: nothing to read back
  auto other = RunSimulation(s);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_GT(other->models_evaluated, 0);
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

// The findings count a gap as resolved only where it is larger than the two cells' seed
// spreads together, and name the N:M rows' group "any (N:M)".
TEST(FindingsTest, AGapIsResolvedOnlyBeyondTheSeedSpreads) {
  SimTable table;
  table.eval_names = {"a", "b"};
  auto row = [](const std::string& pattern, const std::string& method, const std::string& group,
                std::vector<double> a, std::vector<double> b) {
    SimRow r;
    r.calibration = "ts";
    r.pattern = pattern;
    r.method = method;
    if (method == "fedprllm") {
      r.clients = 4;
      r.strategy = "one-shot";
      r.group = group;
      r.tie_break = "index";
    }
    r.ppl["a"].values = std::move(a);
    r.ppl["b"].values = std::move(b);
    return r;
  };
  // Eval a: 10 vs 12 with spreads of 1% and ~0.8%: resolved, one-shot worse. Eval b: 10 vs
  // 10.5 with spreads of 10% and ~9.5%: inside the noise.
  table.rows.push_back(row("unstructured 50%", "centralized-wanda", "", {9.9, 10.1}, {9.0, 11.0}));
  table.rows.push_back(row("unstructured 50%", "fedprllm", "layer", {11.9, 12.1}, {9.5, 11.5}));
  std::string findings = FormatFindings(table);
  EXPECT_NE(findings.find("One-shot, layer, no scaling (tie-break index)"), std::string::npos) << findings;
  EXPECT_NE(findings.find("exceeds the two spreads together in 1 of 2 cells (one-shot worse in 1, better in 0)"),
            std::string::npos)
      << findings;
  table.rows[0].pattern = table.rows[1].pattern = "2:4";
  table.rows[1].group = "any (N:M)";
  findings = FormatFindings(table);
  EXPECT_NE(findings.find("One-shot, any (N:M), no scaling"), std::string::npos) << findings;
}

TEST_F(SimTest, SpecsParse) {
  auto set = ParseCalibrationSet("c4=a.jsonl:prefix+gold_completion|b.txt@second-half");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->name, "c4");
  ASSERT_EQ(set->sources.size(), 2u);
  EXPECT_EQ(set->sources[0].jsonl_fields, (std::vector<std::string>{"prefix", "gold_completion"}));
  EXPECT_EQ(set->part, TextPart::kSecondHalf);
  auto old = ParseCalibrationSet("c4=a.jsonl:prefix,gold_completion");
  ASSERT_FALSE(old.ok());
  EXPECT_NE(old.status().message().find("a.jsonl:prefix+gold_completion"), absl::string_view::npos) << old.status();
  auto tokens = ParseCalibrationSet("owt=train.bin:uint16|val.npy@first-half");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->sources[0].format, CalibrationFormat::kRawUint16);
  EXPECT_EQ(tokens->sources[1].format, CalibrationFormat::kNpy);
  EXPECT_EQ(tokens->part, TextPart::kFirstHalf);
  EXPECT_FALSE(ParseEvalText("no-name").ok());
  EXPECT_FALSE(ParseEvalText("x=a.txt@middle").ok());
}

// A set of raw token files written from the tool's tokenization of text shards simulates to
// the text set's model bit for bit; "@first-half" of ids is their first half by index; and
// windows longer than the model's positions are refused.
TEST_F(SimTest, TokenSetsSimulateLikeTextSets) {
  auto tokenizer = Tokenizer::Load(testing::BundledTokenizer());
  ASSERT_TRUE(tokenizer.ok());
  auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
  ASSERT_TRUE(text.ok());
  const std::string second = SplitHalves(*text).second;
  std::string dir = ::testing::TempDir() + "fedprllm-sim-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  dir += "/";
  auto write = [&dir](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + name, std::ios::binary | std::ios::trunc) << bytes;
    return dir + name;
  };
  auto uint32_file = [](const std::vector<int>& ids) {
    std::string out;
    for (int id : ids) {
      for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>((static_cast<uint32_t>(id) >> (8 * b)) & 0xFF));
    }
    return out;
  };
  std::string text_set = "text=", token_set = "ids=";
  std::vector<int> first_ids;
  for (int site = 0; site < 2; ++site) {
    const std::string shard = write(absl::StrCat("sim-site", site, ".txt"), second.substr(site * 16000, 16000));
    auto ids = TokenizeCalibrationSources(*tokenizer, {*ParseCalibrationSource(shard)}, {512, nullptr});
    ASSERT_TRUE(ids.ok()) << ids.status();
    if (site == 0) first_ids = *ids;
    text_set += absl::StrCat(site == 0 ? "" : "|", shard);
    token_set += absl::StrCat(site == 0 ? "" : "|", write(absl::StrCat("sim-site", site, ".bin"), uint32_file(*ids)),
                              ":uint32");
  }
  const std::string half = write("sim-half.bin", uint32_file(std::vector<int>(
                                                     first_ids.begin(), first_ids.begin() + first_ids.size() / 2)));
  SimSettings s;
  s.model_path = testing::BundledModel();
  s.split = SplitMode::kByFile;
  for (const std::string& spec : {text_set, token_set}) {
    auto set = ParseCalibrationSet(spec);
    ASSERT_TRUE(set.ok()) << set.status();
    s.calibrations.push_back(*set);
  }
  s.evals = {*ParseEvalText(absl::StrCat("ids=", dir, "sim-site1.bin:uint32"))};
  s.nsamples = 4;
  s.seqlen = 32;
  FederationOptions fed;
  fed.local = ClientPruneOptions(fed.aggregation.pattern, {});
  auto from_text = SimulateFederation(s, 0, 2, 0, fed);
  auto from_ids = SimulateFederation(s, 1, 2, 0, fed);
  ASSERT_TRUE(from_text.ok()) << from_text.status();
  ASSERT_TRUE(from_ids.ok()) << from_ids.status();
  ExpectSameModel(*from_text, *from_ids);

  SimSettings halves = s;
  halves.split = SplitMode::kEven;
  halves.clients = {2};
  halves.calibrations = {*ParseCalibrationSet(absl::StrCat("whole=", dir, "sim-site0.bin:uint32@first-half")),
                         *ParseCalibrationSet(absl::StrCat("half=", half, ":uint32"))};
  auto from_whole = SimulateFederation(halves, 0, 2, 0, fed);
  auto from_half = SimulateFederation(halves, 1, 2, 0, fed);
  ASSERT_TRUE(from_whole.ok() && from_half.ok());
  ExpectSameModel(*from_whole, *from_half);

  SimSettings too_long = halves;
  too_long.seqlen = model_->config().max_position_embeddings + 1;
  auto refused = SimulateFederation(too_long, 0, 2, 0, fed);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(absl::StrCat("seqlen ", too_long.seqlen, " exceeds the model's "
                                                         "max_position_embeddings ",
                                                         model_->config().max_position_embeddings)),
            absl::string_view::npos)
      << refused.status();
  too_long = halves;
  too_long.eval_seqlen = model_->config().max_position_embeddings + 1;
  auto refused_eval = RunSimulation(too_long);
  ASSERT_FALSE(refused_eval.ok());
  EXPECT_NE(refused_eval.status().message().find("eval_seqlen"), absl::string_view::npos) << refused_eval.status();
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fedprllm
