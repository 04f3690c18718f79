// Sequential Wanda on the bundled stories260K model: exact sparsity, N:M validity, masks
// equal to an independently computed score, and reproducibility.
#include "engine/site_session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

#include "engine/calibration_data.h"
#include "engine/federation.h"
#include "engine/prune_job.h"
#include "model/perplexity.h"
#include "model/test_paths.h"

namespace fedprllm {
namespace {

class SiteSessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = LlamaModel::Load(testing::BundledModel());
    ASSERT_TRUE(model.ok());
    model_ = new LlamaModel(*std::move(model));
    auto tokenizer = Tokenizer::Load(testing::BundledTokenizer());
    ASSERT_TRUE(tokenizer.ok());
    auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
    ASSERT_TRUE(text.ok());
    auto halves = SplitHalves(*text);
    auto calib = tokenizer->Encode(halves.second, true);
    auto held_out = tokenizer->Encode(halves.first, true);
    ASSERT_TRUE(calib.ok() && held_out.ok());
    calib_tokens_ = new std::vector<int>(*calib);
    held_out_tokens_ = new std::vector<int>(*held_out);
  }
  static at::Tensor Samples(int64_t n, int64_t seqlen, uint64_t seed) {
    auto samples = SampleWindows(*calib_tokens_, {n, seqlen, seed});
    EXPECT_TRUE(samples.ok()) << samples.status();
    return *samples;
  }
  static LocalPruneResult Prune(const LocalPruneOptions& options, const at::Tensor& samples) {
    auto result = PruneLocally(*model_, samples, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return *std::move(result);
  }
  static LlamaModel* model_;
  static std::vector<int>* calib_tokens_;
  static std::vector<int>* held_out_tokens_;
};
LlamaModel* SiteSessionTest::model_ = nullptr;
std::vector<int>* SiteSessionTest::calib_tokens_ = nullptr;
std::vector<int>* SiteSessionTest::held_out_tokens_ = nullptr;

TEST_F(SiteSessionTest, SparsityIsExactPerRowAndPerMatrix) {
  const at::Tensor samples = Samples(8, 64, 1);
  for (ComparisonGroup group : {ComparisonGroup::kRow, ComparisonGroup::kLayer}) {
    for (double sparsity : {0.5, 0.3}) {
      LocalPruneOptions options;
      options.group = group;
      options.pattern.sparsity = sparsity;
      const LocalPruneResult result = Prune(options, samples);
      ASSERT_EQ(result.masks.size(), 5u);
      for (const LayerMasks& layer : result.masks) {
        ASSERT_EQ(layer.size(), 7u);
        for (const auto& [name, mask] : layer) {
          const at::Tensor m = FromPackedMask(mask).reshape(mask.shape());
          const int64_t rows = mask.shape()[0], cols = mask.shape()[1];
          if (group == ComparisonGroup::kRow) {
            const at::Tensor per_row = m.sum(1);
            EXPECT_TRUE(at::all(per_row == static_cast<int64_t>(std::floor(cols * sparsity + 1e-9))).item<bool>()) << name;
          } else {
            EXPECT_EQ(mask.CountOnes(), static_cast<int64_t>(std::floor(rows * cols * sparsity + 1e-9))) << name;
          }
        }
      }
    }
  }
}

TEST_F(SiteSessionTest, NmPatternHoldsEverywhere) {
  const at::Tensor samples = Samples(8, 64, 2);
  // stories260K's down_proj has 172 inputs: 2:4 fits every matrix, 4:8 must be refused.
  {
    LocalPruneOptions options;
    options.pattern = *SparsityPattern::Parse("4:8");
    auto refused = PruneLocally(*model_, samples, options);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("[64, 172]"), absl::string_view::npos) << refused.status();
  }
  for (auto [n, m] : {std::pair{2, 4}}) {
    LocalPruneOptions options;
    auto pattern = SparsityPattern::Parse(absl::StrCat(n, ":", m));
    ASSERT_TRUE(pattern.ok());
    options.pattern = *pattern;
    const LocalPruneResult result = Prune(options, samples);
    for (const LayerMasks& layer : result.masks) {
      for (const auto& [name, mask] : layer) {
        const at::Tensor groups = FromPackedMask(mask).reshape({-1, m}).sum(1);
        EXPECT_TRUE(at::all(groups == n).item<bool>()) << name << " " << n << ":" << m;
      }
    }
  }
}

TEST_F(SiteSessionTest, WandaMasksMatchIndependentScoreOnLayerZero) {
  const at::Tensor samples = Samples(6, 32, 3);
  LocalPruneOptions options;
  auto site = SiteSession::Start(*model_, samples, options);
  ASSERT_TRUE(site.ok());
  auto masks = site->ComputeMasks();
  ASSERT_TRUE(masks.ok());
  // Independent computation: layer-0 input of q_proj is RMSNorm(embedding) * norm weight.
  const at::Tensor emb = model_->tensors().at("model.embed_tokens.weight").index_select(0, samples.reshape(-1));
  const at::Tensor x = emb / at::sqrt(emb.pow(2).mean(-1, true) + 1e-5) *
                       model_->tensors().at("model.layers.0.input_layernorm.weight");
  const at::Tensor norm_sq = x.pow(2).sum(0) / 6.0;  // mean over samples of the squared column norm
  const at::Tensor weight = model_->tensors().at("model.layers.0.self_attn.q_proj.weight");
  const at::Tensor score = weight.abs() * norm_sq.sqrt().unsqueeze(0);
  const PackedMask& q_mask = (*masks)[0].second;
  ASSERT_EQ((*masks)[0].first, "model.layers.0.self_attn.q_proj.weight");
  int64_t mismatches = 0;
  for (int64_t r = 0; r < weight.size(0); ++r) {
    std::vector<int64_t> order(weight.size(1));
    std::iota(order.begin(), order.end(), 0);
    const at::Tensor row = score[r].contiguous();
    const float* s = row.data_ptr<float>();
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[a] < s[b]; });
    for (int64_t i = 0; i < weight.size(1); ++i) {
      const bool expected = i < weight.size(1) / 2;
      mismatches += q_mask.Get(r * weight.size(1) + order[i]) != expected;
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_TRUE(at::allclose(site->column_norms()[0], norm_sq, 1e-4, 1e-6));
}

TEST_F(SiteSessionTest, SameSeedGivesBitIdenticalMasks) {
  LocalPruneOptions options;
  const LocalPruneResult a = Prune(options, Samples(8, 64, 7));
  const LocalPruneResult b = Prune(options, Samples(8, 64, 7));
  const LocalPruneResult c = Prune(options, Samples(8, 64, 8));
  int64_t differing = 0;
  for (size_t l = 0; l < a.masks.size(); ++l) {
    for (size_t k = 0; k < a.masks[l].size(); ++k) {
      EXPECT_EQ(a.masks[l][k].second, b.masks[l][k].second);
      differing += !(a.masks[l][k].second == c.masks[l][k].second);
    }
  }
  EXPECT_GT(differing, 0) << "another seed should change some mask";
}

TEST_F(SiteSessionTest, WandaBeatsMagnitudeAtHalfSparsity) {
  const at::Tensor samples = Samples(32, 128, 0);
  PerplexityOptions eval;
  eval.seqlen = 256;
  eval.max_windows = 40;
  double ppl[2];
  for (PruneMetric metric : {PruneMetric::kWanda, PruneMetric::kMagnitude}) {
    LocalPruneOptions options;
    options.metric = metric;
    auto pruned = PruneModel(*model_, samples, options, nullptr);
    ASSERT_TRUE(pruned.ok());
    auto result = EvaluatePerplexity(*pruned, *held_out_tokens_, eval);
    ASSERT_TRUE(result.ok());
    ppl[metric == PruneMetric::kWanda ? 0 : 1] = result->perplexity;
  }
  EXPECT_LT(ppl[0], ppl[1] * 0.9) << "wanda " << ppl[0] << " magnitude " << ppl[1];
}

TEST_F(SiteSessionTest, OneClientFederationEqualsLocalPruning) {
  const at::Tensor samples = Samples(8, 64, 5);
  FederationOptions options;
  for (Strategy strategy : {Strategy::kOneShot, Strategy::kIterative}) {
    options.strategy = strategy;
    auto federated = RunInProcessFederation(*model_, {samples}, options);
    ASSERT_TRUE(federated.ok()) << federated.status();
    auto local = PruneModel(*model_, samples, options.local, nullptr);
    ASSERT_TRUE(local.ok());
    for (const auto& [name, tensor] : local->tensors()) {
      EXPECT_TRUE(at::equal(tensor, federated->tensors().at(name))) << name << " " << StrategyName(strategy);
    }
  }
}

TEST_F(SiteSessionTest, WindowsLongerThanTheModelsPositionsAreRefused) {
  const int64_t max_positions = model_->config().max_position_embeddings;
  const at::Tensor too_long = at::zeros({1, max_positions + 1}, at::kLong);
  auto refused = SiteSession::Start(*model_, too_long, LocalPruneOptions{});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(absl::StrCat(max_positions + 1, " exceeds the model's "
                                                         "max_position_embeddings ", max_positions)),
            absl::string_view::npos)
      << refused.status();
  EXPECT_TRUE(SiteSession::Start(*model_, at::zeros({1, max_positions}, at::kLong), LocalPruneOptions{}).ok());
}

}  // namespace
}  // namespace fedprllm
