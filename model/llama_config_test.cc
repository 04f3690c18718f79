// Tests of config.json reading: what is followed, what is refused (naming the key), and the
// sequence-length limits.
#include "model/llama_config.h"

#include <gtest/gtest.h>

namespace fedprllm {
namespace {

nlohmann::json Base(const std::string& architecture = "LlamaForCausalLM") {
  return {{"architectures", {architecture}}, {"hidden_size", 64}, {"intermediate_size", 160},
          {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
          {"vocab_size", 97}, {"max_position_embeddings", 64}};
}

TEST(LlamaConfigTest, AnUnknownKeyIsRefusedByName) {
  nlohmann::json json = Base();
  json["attn_logit_softcapping"] = 50.0;
  auto config = LlamaConfig::FromHfJson(json);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(config.status().message().find("attn_logit_softcapping"), std::string::npos) << config.status();
}

TEST(LlamaConfigTest, KeysThatChangeTheForwardPassAreRefusedByName) {
  const std::vector<std::pair<std::string, nlohmann::json>> refused = {
      {"hidden_act", "gelu"},
      {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}},
      {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}, {"beta_fast", 32}}},
      {"layer_types", {"full_attention", "chunked_attention"}},
  };
  for (const auto& [key, value] : refused) {
    nlohmann::json json = Base();
    json[key] = value;
    auto config = LlamaConfig::FromHfJson(json);
    ASSERT_FALSE(config.ok()) << key << " = " << value.dump();
    EXPECT_NE(config.status().message().find(key), std::string::npos) << config.status();
  }
  nlohmann::json mistral = Base("MistralForCausalLM");
  mistral["attention_bias"] = true;
  EXPECT_NE(LlamaConfig::FromHfJson(mistral).status().message().find("attention_bias"), std::string::npos);
}

TEST(LlamaConfigTest, IntegerKeysMustBeIntegersInRange) {
  // fuzz/corpus/llama_config/regress-int-key-out-of-int64-range.json: 3.3e84 used to reach a
  // float-to-int64 cast (undefined behaviour); 8.5 used to be read as 8.
  const std::vector<std::pair<std::string, nlohmann::json>> refused = {
      {"max_position_embeddings", 3.276e84}, {"hidden_size", 64.5}, {"vocab_size", "97"},
      {"num_hidden_layers", uint64_t{1} << 63}, {"head_dim", 1e30}};
  for (const auto& [key, value] : refused) {
    nlohmann::json json = Base();
    json[key] = value;
    auto config = LlamaConfig::FromHfJson(json);
    ASSERT_FALSE(config.ok()) << key << " = " << value.dump();
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
    EXPECT_NE(config.status().message().find(key), std::string::npos) << config.status();
  }
  nlohmann::json dynamic = Base();
  dynamic["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}, {"original_max_position_embeddings", 1e300}};
  EXPECT_NE(LlamaConfig::FromHfJson(dynamic).status().message().find("original_max_position_embeddings"),
            std::string::npos);
  EXPECT_TRUE(LlamaConfig::FromHfJson(Base()).ok());
}

TEST(LlamaConfigTest, FollowsBiasesHeadDimRopeScalingAndWindows) {
  nlohmann::json json = Base();
  json["attention_bias"] = true;
  json["head_dim"] = 24;
  json["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8}};
  auto llama = LlamaConfig::FromHfJson(json);
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->head_dim(), 24);
  EXPECT_EQ(llama->q_dim(), 96);
  EXPECT_EQ(llama->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(llama->linear_has_bias(), (std::array<bool, kNumLinears>{true, true, true, true, false, false, false}));

  auto qwen2 = LlamaConfig::FromHfJson(Base("Qwen2ForCausalLM"));
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_EQ(qwen2->linear_has_bias(), (std::array<bool, kNumLinears>{true, true, true, false, false, false, false}));
  EXPECT_FALSE(qwen2->sliding_window.has_value());

  nlohmann::json mistral_json = Base("MistralForCausalLM");
  mistral_json["sliding_window"] = 32;
  auto mistral = LlamaConfig::FromHfJson(mistral_json);
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_TRUE(mistral->CheckSequenceLength(32).ok());
  const absl::Status too_long = mistral->CheckSequenceLength(33);
  EXPECT_NE(too_long.message().find("sliding_window 32"), std::string::npos) << too_long;
}

TEST(LlamaConfigTest, SequencesPastTheContextAreRefused) {
  auto config = LlamaConfig::FromHfJson(Base());
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->CheckSequenceLength(64).ok());
  const absl::Status refused = config->CheckSequenceLength(100000);
  EXPECT_NE(refused.message().find("max_position_embeddings 64"), std::string::npos) << refused;
  // Dynamic scaling exists to run past the trained context, up to factor times it.
  nlohmann::json dynamic = Base();
  dynamic["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  auto scaled = LlamaConfig::FromHfJson(dynamic);
  ASSERT_TRUE(scaled.ok()) << scaled.status();
  EXPECT_TRUE(scaled->CheckSequenceLength(128).ok());
  EXPECT_FALSE(scaled->CheckSequenceLength(129).ok());
}

TEST(LlamaConfigTest, SavingKeepsEveryKeyOfTheSource) {
  nlohmann::json json = Base();
  json["_name_or_path"] = "meta-llama/Llama-2-7b-hf";
  json["transformers_version"] = "4.31.0";
  json["pretraining_tp"] = 1;
  json["torch_dtype"] = "float16";
  auto config = LlamaConfig::FromHfJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->HfJsonForSave(), json);
  config->dtype = at::kBFloat16;
  nlohmann::json cast = json;
  cast["torch_dtype"] = "bfloat16";
  EXPECT_EQ(config->HfJsonForSave(), cast);
}

}  // namespace
}  // namespace fedprllm
