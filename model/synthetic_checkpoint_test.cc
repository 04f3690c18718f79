// Synthetic checkpoints: the architectures' parameter counts equal the published models',
// a written directory loads as a sharded Hugging Face checkpoint with finite activations at
// depth, the weights depend on the seed and not on the sharding; the streaming writer refuses
// too many or too few bytes and leaves no file behind.
#include "model/synthetic_checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "model/llama_model.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class SyntheticCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedprllm_synth_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Dir(const std::string& sub) const { return (dir_ / sub).string(); }
  fs::path dir_;
};

TEST(SyntheticArchitectureTest, ParameterCountsAreThePublishedModels) {
  const std::vector<std::pair<std::string, int64_t>> published = {{"llama-2-7b", 6738415616},
                                                                  {"llama-2-13b", 13015864320},
                                                                  {"llama-3-8b", 8030261248},
                                                                  {"mistral-7b", 7248023552},
                                                                  {"tinyllama-1.1b", 1100048384}};
  for (const auto& [name, count] : published) {
    absl::StatusOr<LlamaConfig> config = SyntheticArchitecture(name);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(ParameterCount(*config), count) << name;
    EXPECT_EQ(config->dtype, at::kBFloat16);
  }
  const LlamaConfig llama3 = *SyntheticArchitecture("llama-3-8b");
  EXPECT_EQ(llama3.num_key_value_heads, 8);
  EXPECT_EQ(llama3.vocab_size, 128256);
  EXPECT_EQ(llama3.rope_theta, 500000.0);
  EXPECT_EQ(SyntheticArchitecture("mistral-7b")->architecture, "MistralForCausalLM");
  absl::StatusOr<LlamaConfig> unknown = SyntheticArchitecture("gpt-2");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("llama-2-13b"));
}

TEST_F(SyntheticCheckpointTest, ShardedDirectoryLoadsAndTheWeightsIgnoreTheSharding) {
  LlamaConfig config = *SyntheticArchitecture("tiny-test");
  SyntheticOptions options;
  options.seed = 7;
  options.max_shard_bytes = 40'000;  // several shards
  int progress_calls = 0;
  options.progress = [&](uint64_t written, uint64_t total) {
    ++progress_calls;
    EXPECT_LE(written, total);
  };
  ASSERT_TRUE(WriteSyntheticCheckpoint(config, options, Dir("sharded")).ok());
  EXPECT_EQ(progress_calls, static_cast<int>(CheckpointEntries(config).size()));
  std::ifstream index_file(Dir("sharded") + "/model.safetensors.index.json");
  const nlohmann::json index = nlohmann::json::parse(index_file, nullptr, false);
  ASSERT_TRUE(index.is_object());
  std::set<std::string> shards;
  std::map<std::string, int> tensors_in;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    shards.insert(shard.get<std::string>());
    ++tensors_in[shard.get<std::string>()];
  }
  EXPECT_GE(shards.size(), 3u);
  EXPECT_TRUE(shards.count("model-00001-of-0000" + std::to_string(shards.size()) + ".safetensors"));
  uint64_t on_disk = 0;
  for (const std::string& shard : shards) {
    const uint64_t size = fs::file_size(Dir("sharded") + "/" + shard);
    // The data plus its header; a tensor larger than the limit has a shard of its own.
    if (tensors_in[shard] > 1) EXPECT_LE(size, 40'000u + 4096u) << shard;
    on_disk += size;
  }
  EXPECT_GE(on_disk, index["metadata"]["total_size"].get<uint64_t>());
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), ParameterCount(config) * 2);

  absl::StatusOr<LlamaModel> sharded = LlamaModel::Load(Dir("sharded"));
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(sharded->config().hidden_size, 64);
  EXPECT_EQ(sharded->config().num_key_value_heads, 2);
  EXPECT_EQ(sharded->config().dtype, at::kBFloat16);

  // The same seed in one shard: the same tensors. Another seed: other tensors.
  options.max_shard_bytes = 5'000'000'000;
  ASSERT_TRUE(WriteSyntheticCheckpoint(config, options, Dir("single")).ok());
  EXPECT_TRUE(fs::exists(Dir("single") + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(Dir("single") + "/model.safetensors.index.json"));
  absl::StatusOr<LlamaModel> single = LlamaModel::Load(Dir("single"));
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->Fingerprint(), sharded->Fingerprint());
  options.seed = 8;
  ASSERT_TRUE(WriteSyntheticCheckpoint(config, options, Dir("other")).ok());
  absl::StatusOr<LlamaModel> other = LlamaModel::Load(Dir("other"));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->Fingerprint(), single->Fingerprint());
  const at::Tensor q = *single->tensor("model.layers.0.self_attn.q_proj.weight");
  EXPECT_NEAR(q.to(at::kFloat).std().item<double>(), 1.0 / 8.0, 0.01);  // 1/sqrt(64)
  EXPECT_EQ(single->tensor("model.norm.weight")->to(at::kFloat).min().item<float>(), 1.0f);
}

TEST_F(SyntheticCheckpointTest, ActivationsStayFiniteAtTheDepthOf13B) {
  LlamaConfig config = *SyntheticArchitecture("tiny-test");
  config.num_hidden_layers = 40;
  ASSERT_TRUE(WriteSyntheticCheckpoint(config, SyntheticOptions{}, Dir("deep")).ok());
  absl::StatusOr<LlamaModel> model = LlamaModel::Load(Dir("deep"));
  ASSERT_TRUE(model.ok()) << model.status();
  const at::Tensor tokens = at::randint(0, config.vocab_size, {2, 64}, at::kLong);
  const ComputeOptions compute;  // bfloat16, the checkpoint's dtype
  at::Tensor hidden = *model->Embed(tokens, compute);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    absl::StatusOr<DecoderLayerWeights> weights = model->Layer(layer, compute);
    ASSERT_TRUE(weights.ok()) << weights.status();
    hidden = *model->DecoderLayerForward(*weights, hidden);
    const double rms = hidden.to(at::kFloat).pow(2).mean().sqrt().item<double>();
    ASSERT_TRUE(std::isfinite(rms)) << "layer " << layer;
    ASSERT_LT(rms, 20.0) << "layer " << layer;
  }
  const at::Tensor logits = *model->Logits(hidden, compute);
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  EXPECT_LT(logits.abs().max().item<float>(), 100.0f);
}

TEST_F(SyntheticCheckpointTest, WriterRefusesTooManyOrTooFewBytesAndLeavesNoFile) {
  fs::create_directories(dir_);
  const std::string path = Dir("w.safetensors");
  std::vector<SafetensorsEntry> entries = {{"a", at::kFloat, {2, 3}}, {"b", at::kBFloat16, {4}}};
  {
    auto writer = SafetensorsWriter::Create(path, entries, {{"note", "test"}});
    ASSERT_TRUE(writer.ok()) << writer.status();
    EXPECT_EQ((*writer)->remaining(), 24u + 8u);
    EXPECT_TRUE((*writer)->Append(std::string(30, '\0')).ok());
    EXPECT_EQ((*writer)->Append(std::string(3, '\0')).code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string((*writer)->Finish().message()), HasSubstr("2 bytes of tensor data missing"));
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir_));
  EXPECT_EQ(SafetensorsWriter::Create(path, {{"a", at::kFloat, {1}}, {"a", at::kFloat, {1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SafetensorsWriter::Create(path, {{"i", at::kLong, {1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);

  auto writer = SafetensorsWriter::Create(path, entries, {{"note", "test"}});
  ASSERT_TRUE(writer.ok());
  const at::Tensor a = at::arange(6, at::kFloat).reshape({2, 3});
  const at::Tensor b = at::full({4}, 0.5, at::kBFloat16);
  ASSERT_TRUE((*writer)->Append(absl::string_view(static_cast<const char*>(a.data_ptr()), 24)).ok());
  ASSERT_TRUE((*writer)->Append(absl::string_view(static_cast<const char*>(b.data_ptr()), 8)).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  absl::StatusOr<TensorMap> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(at::equal(read->at("a"), a));
  EXPECT_TRUE(at::equal(read->at("b"), b));
}

}  // namespace
}  // namespace fedprllm
