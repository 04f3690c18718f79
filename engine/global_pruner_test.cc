// GlobalPruner: votes from in-memory masks and from on-demand sources decide alike; a round
// refuses clients past its bound and reports a source that breaks its promise at close.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "engine/federation.h"
#include "model/synthetic_checkpoint.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

LlamaModel TinyModel() {
  LlamaConfig config = *SyntheticArchitecture("tiny-test");
  config.num_hidden_layers = 1;
  config.dtype = at::kFloat;
  at::manual_seed(3);
  TensorMap tensors;
  for (const SafetensorsEntry& e : CheckpointEntries(config)) tensors[e.name] = at::randn(e.shape);
  return *LlamaModel::FromTensors(config, std::move(tensors), "tiny");
}

std::map<std::string, PackedMask> RandomMasks(const GlobalPruner& pruner, uint32_t seed) {
  std::mt19937 rng(seed);
  std::map<std::string, PackedMask> masks;
  for (const auto& [name, shape] : pruner.ExpectedTensors()) {
    PackedMask m(shape);
    for (int64_t i = 0; i < m.numel(); ++i) m.Set(i, rng() % 2 == 0);
    masks.emplace(name, std::move(m));
  }
  return masks;
}

TEST(GlobalPrunerTest, SourcesAndInMemoryMasksDecideAlike) {
  for (bool scaling : {false, true}) {
    AggregationOptions options;
    options.weight_scaling = scaling;
    GlobalPruner in_memory(TinyModel(), options), from_sources(TinyModel(), options);
    ASSERT_TRUE(in_memory.OpenRound(0, {0}, 3).ok());
    ASSERT_TRUE(from_sources.OpenRound(0, {0}, 3).ok());
    int calls = 0;
    for (uint32_t c = 0; c < 3; ++c) {
      std::map<std::string, PackedMask> masks = RandomMasks(in_memory, c);
      ASSERT_TRUE(in_memory.AddClient("site-" + std::to_string(c), masks).ok());
      auto held = std::make_shared<std::map<std::string, PackedMask>>(masks);
      ASSERT_TRUE(from_sources
                      .AddClientSource("site-" + std::to_string(c), from_sources.ExpectedTensors(),
                                       [held, &calls](const std::string& name) -> absl::StatusOr<PackedMask> {
                                         ++calls;
                                         return held->at(name);
                                       })
                      .ok());
    }
    EXPECT_EQ(calls, 0);  // nothing is read before the round closes
    absl::StatusOr<RoundDecision> a = in_memory.CloseRound();
    absl::StatusOr<RoundDecision> b = from_sources.CloseRound();
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    // Each mask is read twice: to count its votes, then to compare it with the decision.
    EXPECT_EQ(calls, 2 * 3 * kNumLinears);
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) {
      EXPECT_EQ((*a)[i].name, (*b)[i].name);
      EXPECT_EQ((*a)[i].mask, (*b)[i].mask);
      EXPECT_EQ((*a)[i].scale.defined(), scaling);
      if (scaling) EXPECT_TRUE(at::equal((*a)[i].scale, (*b)[i].scale));
    }
    EXPECT_EQ(in_memory.PrunedModel()->Fingerprint(), from_sources.PrunedModel()->Fingerprint());
    EXPECT_NE(in_memory.PrunedModel()->Fingerprint(), in_memory.base_model().Fingerprint());
    EXPECT_EQ(in_memory.report(), from_sources.report());
  }
}

TEST(GlobalPrunerTest, ARoundRefusesClientsPastItsBoundAndIncompleteMasks) {
  GlobalPruner pruner(TinyModel(), AggregationOptions{});
  ASSERT_TRUE(pruner.OpenRound(0, {0}, 2).ok());
  ASSERT_TRUE(pruner.AddClient("a", RandomMasks(pruner, 1)).ok());
  EXPECT_EQ(pruner.AddClient("a", RandomMasks(pruner, 2)).code(), absl::StatusCode::kAlreadyExists);
  std::map<std::string, PackedMask> partial = RandomMasks(pruner, 3);
  partial.erase(partial.begin());
  EXPECT_THAT(std::string(pruner.AddClient("b", partial).message()), HasSubstr("sent no mask for"));
  ASSERT_TRUE(pruner.AddClient("b", RandomMasks(pruner, 4)).ok());
  const absl::Status third = pruner.AddClient("c", RandomMasks(pruner, 5));
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.message()), HasSubstr("maximum of 2 clients"));
  EXPECT_EQ(pruner.num_clients_in_round(), 2);
}

TEST(GlobalPrunerTest, ASourceThatYieldsAWrongMaskFailsTheClose) {
  GlobalPruner pruner(TinyModel(), AggregationOptions{});
  ASSERT_TRUE(pruner.OpenRound(0, {0}).ok());
  ASSERT_TRUE(pruner
                  .AddClientSource("a", pruner.ExpectedTensors(),
                                   [](const std::string&) -> absl::StatusOr<PackedMask> { return PackedMask({3}); })
                  .ok());
  const absl::StatusOr<RoundDecision> closed = pruner.CloseRound();
  EXPECT_EQ(closed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(closed.status().message()), HasSubstr("the mask of a for"));
}

}  // namespace
}  // namespace fedprllm
