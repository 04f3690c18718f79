// The exact strategy: pooling checks, and exact mode on C sites equal to centralized Wanda
// (float64 statistics) on the union of the sites' windows, on stories260K and babyllama-1M.
#include "engine/exact_statistics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/calibration_data.h"
#include "engine/federation.h"
#include "model/perplexity.h"
#include "model/test_paths.h"
#include "model/tokenizer.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

struct Case {
  std::string model;
  std::string tokenizer;
};

struct Loaded {
  LlamaModel model;
  std::vector<int> tokens;
};

Loaded Load(const Case& c) {
  auto model = LlamaModel::Load(c.model);
  EXPECT_TRUE(model.ok()) << model.status();
  auto tokenizer = Tokenizer::Load(c.tokenizer);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
  EXPECT_TRUE(text.ok());
  auto tokens = tokenizer->Encode(SplitHalves(*text).second, true);
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  return Loaded{*std::move(model), *std::move(tokens)};
}

// `sites` sites with `per_site` windows each, drawn from disjoint stretches of the tokens.
std::vector<at::Tensor> SiteWindows(const std::vector<int>& tokens, int sites, int64_t per_site, int64_t seqlen) {
  std::vector<at::Tensor> out;
  const size_t stretch = tokens.size() / sites;
  for (int s = 0; s < sites; ++s) {
    const std::vector<int> part(tokens.begin() + s * stretch, tokens.begin() + (s + 1) * stretch);
    auto windows = SampleWindows(part, {per_site, seqlen, static_cast<uint64_t>(100 + s)});
    EXPECT_TRUE(windows.ok()) << windows.status();
    out.push_back(*windows);
  }
  return out;
}

// Exact mode's masks against centralized Wanda's (float64 statistics, the same group and
// pattern) on the concatenated windows; returns the number of differing mask entries.
// `centralized_windows` defaults to all of them.
int64_t DifferingEntries(const LlamaModel& model, const std::vector<at::Tensor>& windows, ComparisonGroup group,
                         const SparsityPattern& pattern, at::Tensor centralized_windows = at::Tensor()) {
  FederationOptions federation;
  federation.strategy = Strategy::kExact;
  federation.aggregation.group = group;
  federation.aggregation.pattern = pattern;
  auto exact = RunExactRounds(model, windows, federation);
  EXPECT_TRUE(exact.ok()) << exact.status();
  LocalPruneOptions centralized;
  centralized.float64_statistics = true;
  centralized.group = group;
  centralized.pattern = pattern;
  auto pooled =
      PruneLocally(model, centralized_windows.defined() ? centralized_windows : at::cat(windows, 0), centralized);
  EXPECT_TRUE(pooled.ok()) << pooled.status();
  if (!exact.ok() || !pooled.ok()) return -1;
  EXPECT_EQ(exact->size(), pooled->masks.size());
  int64_t differing = 0;
  for (size_t layer = 0; layer < exact->size(); ++layer) {
    for (int k = 0; k < kNumLinears; ++k) {
      const PackedMask& a = (*exact)[layer][k].second;
      const PackedMask& b = pooled->masks[layer][k].second;
      EXPECT_EQ((*exact)[layer][k].first, pooled->masks[layer][k].first);
      for (int64_t i = 0; i < a.numel(); ++i) differing += a.Get(i) != b.Get(i);
    }
  }
  return differing;
}

class ExactStrategyTest : public ::testing::TestWithParam<Case> {};

TEST_P(ExactStrategyTest, ExactModeOnSitesEqualsCentralizedWandaOnTheirUnion) {
  const Loaded loaded = Load(GetParam());
  for (int sites : {3, 8, 64}) {
    const std::vector<at::Tensor> windows = SiteWindows(loaded.tokens, sites, sites == 64 ? 1 : 2, 128);
    EXPECT_EQ(DifferingEntries(loaded.model, windows, ComparisonGroup::kRow, {0.5}), 0) << sites << " sites, row";
    if (sites == 3) {  // the comparison can see a difference: one site's windows alone
      EXPECT_GT(DifferingEntries(loaded.model, windows, ComparisonGroup::kRow, {0.5}, windows[0]), 1000);
    }
    if (sites == 8) {
      EXPECT_EQ(DifferingEntries(loaded.model, windows, ComparisonGroup::kLayer, {0.5}), 0) << "layer";
      EXPECT_EQ(DifferingEntries(loaded.model, windows, ComparisonGroup::kRow, {0.5, 2, 4}), 0) << "2:4";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, ExactStrategyTest,
    ::testing::Values(Case{testing::BundledModel(), testing::BundledTokenizer()},
                      Case{testing::SharedData("babyllama-1M/model5000.bin"),
                           testing::SharedData("babyllama-1M/tok105.model")}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.index == 0 ? "stories260K" : "babyllama1M"; });

TEST(ExactStatisticsTest, PoolingAddsSumsAndTokensAndRefusesMixedLayers) {
  LayerStatistics a, b;
  a.layer = b.layer = 2;
  for (int i = 0; i < kNumStatisticInputs; ++i) {
    a.column_sums[i] = at::full({3}, 1.5, at::kDouble);
    b.column_sums[i] = at::full({3}, 0.25, at::kDouble);
  }
  a.tokens = 10;
  b.tokens = 6;
  auto pooled = PoolStatistics({a, b});
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  EXPECT_EQ(pooled->tokens, 16);
  EXPECT_TRUE(at::equal(pooled->column_sums[3], at::full({3}, 1.75, at::kDouble)));
  EXPECT_TRUE(at::equal(a.column_sums[0], at::full({3}, 1.5, at::kDouble)));  // inputs untouched
  b.layer = 3;
  EXPECT_EQ(PoolStatistics({a, b}).status().message(), "statistics of layers 2 and 3 cannot be pooled");
  EXPECT_FALSE(PoolStatistics({}).ok());
}

TEST(ExactStatisticsTest, CheckRefusesWrongWidthsTypesAndNegativeSums) {
  auto model = LlamaModel::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok());
  const LlamaConfig& config = model->config();
  const auto widths = StatisticWidths(config);
  LayerStatistics s;
  s.layer = 1;
  s.tokens = 5;
  for (int i = 0; i < kNumStatisticInputs; ++i) s.column_sums[i] = at::ones({widths[i]}, at::kDouble);
  EXPECT_TRUE(CheckStatistics(config, s).ok());
  LayerStatistics wrong = s;
  wrong.column_sums[3] = at::ones({widths[3] + 1}, at::kDouble);
  EXPECT_EQ(CheckStatistics(config, wrong).message(),
            absl::StrCat("statistics of layer 1 input 'down' must be float64 [", widths[3], "]"));
  wrong = s;
  wrong.column_sums[0] = at::ones({widths[0]}, at::kFloat);
  EXPECT_THAT(CheckStatistics(config, wrong).message(), HasSubstr("input 'qkv' must be float64"));
  wrong = s;
  wrong.column_sums[1] = -at::ones({widths[1]}, at::kDouble);
  EXPECT_THAT(CheckStatistics(config, wrong).message(), HasSubstr("negative or non-finite"));
  wrong = s;
  wrong.tokens = 0;
  EXPECT_THAT(CheckStatistics(config, wrong).message(), HasSubstr("cover 0 tokens"));
  wrong = s;
  wrong.layer = config.num_hidden_layers;
  EXPECT_FALSE(CheckStatistics(config, wrong).ok());
}

// The record's layout is the documented one (docs/round_protocol.md §4): read back here by
// hand, not with DecodeStatistics.
TEST(ExactStatisticsTest, RecordHasTheDocumentedLayoutAndRoundTrips) {
  auto model = LlamaModel::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok());
  const LlamaConfig& config = model->config();
  const auto widths = StatisticWidths(config);
  LayerStatistics s;
  s.layer = 2;
  s.tokens = 3 * 256;
  int64_t values = 0;
  for (int i = 0; i < kNumStatisticInputs; ++i) {
    s.column_sums[i] = at::rand({widths[i]}, at::kDouble).mul(1000);
    values += widths[i];
  }
  auto record = EncodeStatistics(s);
  ASSERT_TRUE(record.ok()) << record.status();
  ASSERT_EQ(static_cast<int64_t>(record->size()), 8 * (1 + values));
  uint64_t tokens = 0;
  std::memcpy(&tokens, record->data(), 8);
  EXPECT_EQ(tokens, 768u);
  size_t offset = 8;
  for (int i = 0; i < kNumStatisticInputs; ++i) {
    for (int64_t j = 0; j < widths[i]; ++j, offset += 8) {
      double value = 0;
      std::memcpy(&value, record->data() + offset, 8);
      ASSERT_EQ(value, s.column_sums[i][j].item<double>()) << kStatisticInputNames[i] << " " << j;
    }
  }
  auto back = DecodeStatistics(config, 2, *record);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layer, 2);
  EXPECT_EQ(back->tokens, 768);
  for (int i = 0; i < kNumStatisticInputs; ++i) EXPECT_TRUE(at::equal(back->column_sums[i], s.column_sums[i]));
}

TEST(ExactStatisticsTest, DecodingRefusesWrongSizesAndBadValues) {
  auto model = LlamaModel::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok());
  const LlamaConfig& config = model->config();
  const auto widths = StatisticWidths(config);
  LayerStatistics s;
  s.layer = 0;
  s.tokens = 10;
  for (int i = 0; i < kNumStatisticInputs; ++i) s.column_sums[i] = at::ones({widths[i]}, at::kDouble);
  const std::string good = *EncodeStatistics(s);
  EXPECT_THAT(DecodeStatistics(config, 0, good.substr(0, good.size() - 8)).status().message(),
              HasSubstr(absl::StrCat("has ", good.size() - 8, " bytes; this model's is ", good.size())));
  std::string zero_tokens = good;
  std::memset(zero_tokens.data(), 0, 8);
  EXPECT_THAT(DecodeStatistics(config, 0, zero_tokens).status().message(), HasSubstr("cover 0 tokens"));
  std::string negative = good;
  const double minus_one = -1.0;
  std::memcpy(negative.data() + 8 + 8 * 5, &minus_one, 8);
  EXPECT_THAT(DecodeStatistics(config, 0, negative).status().message(), HasSubstr("negative or non-finite"));
  std::string huge_tokens = good;
  const uint64_t too_many = ~uint64_t{0};
  std::memcpy(huge_tokens.data(), &too_many, 8);
  EXPECT_FALSE(DecodeStatistics(config, 0, huge_tokens).ok());
  EXPECT_FALSE(DecodeStatistics(config, config.num_hidden_layers, good).ok());
}

}  // namespace
}  // namespace fedprllm
