// Agreement counts and the outlier rule: robust z-scores, ties, fewer sites than the minimum,
// MAD = 0, the absolute gap, and GlobalPruner's exclusion of an inverted site.
#include "engine/site_agreement.h"

#include <cmath>
#include <limits>

#include "common/splitmix64.h"
#include "common/status_macros.h"
#include "engine/federation.h"
#include "model/synthetic_checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

OutlierOptions Rule() { return OutlierOptions{}; }  // z 3.5, gap 0.05, min 3 sites

TEST(OutlierPolicyTest, Parses) {
  EXPECT_EQ(*ParseOutlierPolicy("report"), OutlierPolicy::kReport);
  EXPECT_EQ(*ParseOutlierPolicy("exclude"), OutlierPolicy::kExclude);
  EXPECT_FALSE(ParseOutlierPolicy("drop").ok());
  EXPECT_EQ(OutlierPolicyName(OutlierPolicy::kExclude), "exclude");
  EXPECT_TRUE(Rule().Validate().ok());
  OutlierOptions bad;
  bad.min_sites = 2;
  EXPECT_FALSE(bad.Validate().ok());
  bad = {};
  bad.z_threshold = 0.5;
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(AgreementTest, CountsAgainstTheDecision) {
  PackedMask site({3, 7}), decision({3, 7});
  for (int64_t i : {0, 1, 2, 9, 20}) site.Set(i, true);
  for (int64_t i : {0, 1, 5, 9, 13}) decision.Set(i, true);
  AgreementCounts counts;
  ASSERT_TRUE(AddAgreement(site, decision, &counts).ok());
  EXPECT_EQ(counts.weights, 21);
  EXPECT_EQ(counts.site_pruned, 5);
  EXPECT_EQ(counts.decision_pruned, 5);
  EXPECT_EQ(counts.both_pruned, 3);
  EXPECT_DOUBLE_EQ(counts.agreement(), 0.6);
  EXPECT_DOUBLE_EQ(counts.distance(), 4.0 / 21);  // 2 and 20 vs 5 and 13
  // Summed over tensors.
  ASSERT_TRUE(AddAgreement(site, site, &counts).ok());
  EXPECT_DOUBLE_EQ(counts.agreement(), 8.0 / 10);
  EXPECT_FALSE(AddAgreement(site, PackedMask({7, 3}), &counts).ok());
  EXPECT_EQ(counts.weights, 42);  // unchanged by the failure
  EXPECT_DOUBLE_EQ(AgreementCounts{}.agreement(), 1.0);
  EXPECT_DOUBLE_EQ(AgreementCounts{}.distance(), 0.0);
}

TEST(AgreementTest, LargeMasksMatchBitByBit) {
  PackedMask a({1, 1000}), b({1, 1000});
  uint64_t state = 11;
  int64_t both = 0, ones_a = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    const bool x = SplitMix64(&state) & 1, y = SplitMix64(&state) & 1;
    a.Set(i, x);
    b.Set(i, y);
    both += x && y;
    ones_a += x;
  }
  AgreementCounts counts;
  ASSERT_TRUE(AddAgreement(a, b, &counts).ok());
  EXPECT_EQ(counts.both_pruned, both);
  EXPECT_EQ(counts.site_pruned, ones_a);
}

TEST(OutlierRuleTest, RobustZScoreFlagsTheFarSite) {
  const OutlierVerdict v = FindOutliers({0.93, 0.95, 0.08}, Rule());
  EXPECT_TRUE(v.applied);
  EXPECT_DOUBLE_EQ(v.median, 0.93);
  EXPECT_NEAR(v.mad, 0.02, 1e-12);  // deviations 0, 0.02, 0.85
  EXPECT_NEAR(v.z[2], -0.85 / (1.4826 * 0.02), 1e-9);
  EXPECT_NEAR(v.z[1], 0.02 / (1.4826 * 0.02), 1e-9);
  EXPECT_EQ(v.outlier, (std::vector<bool>{false, false, true}));
  EXPECT_NEAR(v.cutoff, 0.93 - 3.5 * 1.4826 * 0.02, 1e-12);
}

TEST(OutlierRuleTest, TightSitesAndASmallGapIsNotAnOutlier) {
  // z = -0.03 / (1.4826 * 0.005) = -4.0, but only 0.03 below the median (< min_gap 0.05).
  const OutlierVerdict v = FindOutliers({0.950, 0.955, 0.920, 0.950, 0.945}, Rule());
  EXPECT_LT(v.z[2], -3.5);
  EXPECT_FALSE(v.outlier[2]);
  OutlierOptions no_gap = Rule();
  no_gap.min_gap = 0;
  EXPECT_TRUE(FindOutliers({0.950, 0.955, 0.920, 0.950, 0.945}, no_gap).outlier[2]);
}

TEST(OutlierRuleTest, TooFewSites) {
  const OutlierVerdict v = FindOutliers({0.95, 0.05}, Rule());
  EXPECT_FALSE(v.applied);
  EXPECT_EQ(v.outlier, (std::vector<bool>{false, false}));
  OutlierOptions five = Rule();
  five.min_sites = 5;
  EXPECT_FALSE(FindOutliers({0.93, 0.95, 0.08, 0.94}, five).applied);
  EXPECT_TRUE(FindOutliers({0.93, 0.95, 0.08, 0.94, 0.94}, five).outlier[2]);
  EXPECT_FALSE(FindOutliers({}, Rule()).applied);
}

TEST(OutlierRuleTest, MadZeroLeavesTheGapToDecide) {
  // Three identical sites and one far below: MAD 0, z -inf, the gap decides.
  const OutlierVerdict v = FindOutliers({0.9, 0.9, 0.9, 0.5}, Rule());
  EXPECT_DOUBLE_EQ(v.mad, 0.0);
  EXPECT_EQ(v.z[3], -std::numeric_limits<double>::infinity());
  EXPECT_EQ(v.z[0], 0.0);
  EXPECT_EQ(v.outlier, (std::vector<bool>{false, false, false, true}));
  EXPECT_DOUBLE_EQ(v.cutoff, 0.85);
  // Just inside the gap: not an outlier.
  EXPECT_FALSE(FindOutliers({0.9, 0.9, 0.9, 0.86}, Rule()).outlier[3]);
  // Everybody equal: nobody.
  const OutlierVerdict same = FindOutliers({0.7, 0.7, 0.7}, Rule());
  EXPECT_EQ(same.outlier, (std::vector<bool>{false, false, false}));
  // Above the median is never an outlier, however far.
  EXPECT_FALSE(FindOutliers({0.5, 0.5, 0.5, 1.0}, Rule()).outlier[3]);
}

TEST(OutlierRuleTest, TiesGetEqualVerdictsAndNeverAMajority) {
  // Two equal low sites of five: both flagged or neither.
  const OutlierVerdict v = FindOutliers({0.95, 0.1, 0.94, 0.1, 0.96}, Rule());
  EXPECT_EQ(v.outlier[1], v.outlier[3]);
  EXPECT_TRUE(v.outlier[1]);
  // Half low, half high: the median sits between, MAD is large, nobody is an outlier.
  const OutlierVerdict halves = FindOutliers({0.1, 0.1, 0.9, 0.9}, Rule());
  EXPECT_EQ(halves.outlier, (std::vector<bool>{false, false, false, false}));
  // A majority of bad sites becomes the consensus: the honest minority is not flagged
  // either (the rule cannot know who is right; docs/robustness.md §3).
  const OutlierVerdict majority = FindOutliers({0.1, 0.12, 0.11, 0.95, 0.94}, Rule());
  for (bool o : majority.outlier) EXPECT_FALSE(o);
}

// GlobalPruner: two sites that agree and one that prunes, in every row, exactly the weights
// the other two keep. With kExclude the third site's votes are dropped and the decision equals
// the two sites' own; with kReport it is counted and flagged.
LlamaModel TinyModel() {
  LlamaConfig config = *SyntheticArchitecture("tiny-test");
  config.num_hidden_layers = 1;
  config.dtype = at::kFloat;
  at::manual_seed(5);
  TensorMap tensors;
  for (const SafetensorsEntry& e : CheckpointEntries(config)) tensors[e.name] = at::randn(e.shape);
  return *LlamaModel::FromTensors(config, std::move(tensors), "tiny");
}

// Per row, the first half pruned (honest) or the second half (inverted); `noise` swaps one
// pair in some rows so the two honest sites are not identical.
std::map<std::string, PackedMask> HalfRows(const GlobalPruner& pruner, bool inverted, int noise) {
  std::map<std::string, PackedMask> masks;
  for (const auto& [name, shape] : pruner.ExpectedTensors()) {
    PackedMask m(shape);
    const int64_t cols = shape.back(), rows = m.numel() / cols, k = cols / 2;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) m.Set(r * cols + c, (c < k) != inverted);
      if (noise > 0 && r % 3 == noise % 3 && !inverted) {  // swap one pruned and one kept
        m.Set(r * cols + 0, false);
        m.Set(r * cols + k, true);
      }
    }
    masks.emplace(name, std::move(m));
  }
  return masks;
}

absl::StatusOr<RoundDecision> Decide(OutlierPolicy policy, bool with_inverted, std::vector<SiteStanding>* standings) {
  OutlierOptions outliers;
  outliers.policy = policy;
  AggregationOptions options;
  options.group = ComparisonGroup::kRow;
  GlobalPruner pruner(TinyModel(), options, outliers);
  RETURN_IF_ERROR(pruner.OpenRound(0, {0}, 3));
  RETURN_IF_ERROR(pruner.AddClient("site-a", HalfRows(pruner, false, 1)));
  RETURN_IF_ERROR(pruner.AddClient("site-b", HalfRows(pruner, false, 2)));
  if (with_inverted) RETURN_IF_ERROR(pruner.AddClient("site-c", HalfRows(pruner, true, 0)));
  absl::StatusOr<RoundDecision> decision = pruner.CloseRound();
  if (standings != nullptr) *standings = pruner.last_standings();
  const nlohmann::json& round = pruner.report()["rounds"].back();
  EXPECT_EQ(round["outliers"]["policy"], std::string(OutlierPolicyName(policy)));
  EXPECT_TRUE(round["sites"].contains("site-a"));
  return decision;
}

TEST(OutlierPrunerTest, ExcludeDecidesAsTheHonestSitesAlone) {
  std::vector<SiteStanding> standings;
  absl::StatusOr<RoundDecision> honest = Decide(OutlierPolicy::kExclude, false, nullptr);
  absl::StatusOr<RoundDecision> excluded = Decide(OutlierPolicy::kExclude, true, &standings);
  ASSERT_TRUE(honest.ok() && excluded.ok()) << honest.status() << excluded.status();
  ASSERT_EQ(honest->size(), excluded->size());
  for (size_t i = 0; i < honest->size(); ++i) EXPECT_EQ((*honest)[i].mask, (*excluded)[i].mask) << (*honest)[i].name;
  ASSERT_EQ(standings.size(), 3u);
  EXPECT_FALSE(standings[0].outlier);
  EXPECT_FALSE(standings[1].outlier);
  EXPECT_TRUE(standings[2].outlier);
  EXPECT_TRUE(standings[2].excluded);
  EXPECT_LT(standings[2].against_final.agreement(), 0.1);
  EXPECT_GT(standings[0].against_final.agreement(), 0.9);
}

TEST(OutlierPrunerTest, ReportCountsTheOutlierAndNamesIt) {
  std::vector<SiteStanding> standings;
  absl::StatusOr<RoundDecision> honest = Decide(OutlierPolicy::kReport, false, nullptr);
  absl::StatusOr<RoundDecision> reported = Decide(OutlierPolicy::kReport, true, &standings);
  ASSERT_TRUE(honest.ok() && reported.ok());
  bool differs = false;
  for (size_t i = 0; i < honest->size(); ++i) differs |= !((*honest)[i].mask == (*reported)[i].mask);
  EXPECT_TRUE(differs);  // its votes counted
  EXPECT_TRUE(standings[2].outlier);
  EXPECT_FALSE(standings[2].excluded);
}

}  // namespace
}  // namespace fedprllm
