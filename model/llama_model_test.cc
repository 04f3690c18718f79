// Golden tests of the model core against the reference values in shared/data/SOURCES.md,
// for the llama2.c checkpoint and its Hugging Face conversion. The golden tests run on
// FEDPRLLM_TEST_DEVICE (model/test_paths.h; default cpu).
#include "model/llama_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "model/perplexity.h"
#include "model/test_paths.h"
#include "model/tokenizer.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;
using testing::BundledModel;
using testing::BundledTokenizer;

std::string TempDir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("fedprllm_model_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

at::Tensor Tokens(const std::vector<int>& ids) {
  return at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0);
}

at::Tensor BosLogits(const LlamaModel& model, const ComputeOptions& compute) {
  auto logits = model.Forward(Tokens({1}), compute);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return (*logits)[0][0].cpu();
}

std::vector<int> Greedy(const LlamaModel& model, int steps, const ComputeOptions& compute) {
  std::vector<int> ids = {1};
  for (int i = 0; i < steps; ++i) {
    auto logits = model.Forward(Tokens(ids), compute);
    EXPECT_TRUE(logits.ok()) << logits.status();
    ids.push_back(static_cast<int>((*logits)[0][-1].argmax().item<int64_t>()));
  }
  return std::vector<int>(ids.begin() + 1, ids.end());
}

std::string StoryOne() {
  auto text = ReadTextFile(testing::SharedData("tinystories/tinystories_val.txt"));
  EXPECT_TRUE(text.ok()) << text.status();
  const std::string end = "became best friends.";
  const size_t pos = text->find(end);
  EXPECT_NE(pos, std::string::npos);
  return text->substr(0, pos + end.size());
}

void ExpectGolden(const LlamaModel& model) {
  // On FEDPRLLM_TEST_DEVICE (scripts/gpu_check.sh sets "cuda"), default cpu; a device that
  // this build or machine lacks fails the test.
  auto options = ParseComputeOptions(testing::TestDevice(), "");
  ASSERT_TRUE(options.ok()) << "FEDPRLLM_TEST_DEVICE: " << options.status();
  const ComputeOptions compute = *options;
  std::printf("golden values on %s\n", compute.device.str().c_str());
  const at::Tensor logits = BosLogits(model, compute);
  const double expected_first[] = {-6.22291, 8.40434, -6.22374, -6.22254};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(logits[i].item<double>(), expected_first[i], 2e-4) << "logit " << i;
  const auto top = logits.topk(5);
  const int64_t expected_ids[] = {403, 385, 410, 317, 407};
  const double expected_values[] = {17.02352, 15.40621, 13.10826, 12.76917, 12.41809};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(std::get<1>(top)[i].item<int64_t>(), expected_ids[i]);
    EXPECT_NEAR(std::get<0>(top)[i].item<double>(), expected_values[i], 2e-4);
  }
  const std::vector<int> expected_greedy = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                            315, 421, 395, 317, 426, 338, 401, 396, 267, 337};
  EXPECT_EQ(Greedy(model, 20, compute), expected_greedy);

  auto tokenizer = Tokenizer::Load(BundledTokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto ids = tokenizer->Encode(StoryOne(), /*add_bos=*/true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), 171u);
  const std::vector<int> expected_prefix = {1, 301, 427, 309, 426, 301, 427, 309, 394, 265, 262, 415};
  EXPECT_EQ(std::vector<int>(ids->begin(), ids->begin() + 12), expected_prefix);
  auto nll = SumNll(model, Tokens(*ids), compute);
  ASSERT_TRUE(nll.ok()) << nll.status();
  EXPECT_NEAR(*nll / 170.0, 1.29775, 1e-3);
}

TEST(LlamaModelTest, Llama2cCheckpointMatchesGoldenValues) {
  auto model = LlamaModel::Load(BundledModel());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->config().hidden_size, 64);
  EXPECT_EQ(model->config().num_key_value_heads, 4);
  EXPECT_TRUE(model->config().tie_word_embeddings);
  ExpectGolden(*model);
}

TEST(LlamaModelTest, HuggingFaceConversionMatchesGoldenValuesAndLlama2c) {
  auto model = LlamaModel::Load(BundledModel());
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string dir = TempDir("hf");
  ASSERT_TRUE(model->SaveHf(dir, BundledTokenizer()).ok());
  EXPECT_TRUE(fs::exists(fs::path(dir) / "tokenizer.model"));
  auto hf = LlamaModel::Load(dir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  ExpectGolden(*hf);
  auto found = FindTokenizer(dir, "");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, (fs::path(dir) / "tokenizer.model").string());
  const at::Tensor tokens = at::randint(0, 512, {2, 40}, at::kLong);
  auto a = model->Forward(tokens, ComputeOptions{});
  auto b = hf->Forward(tokens, ComputeOptions{});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LE((*a - *b).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(model->Fingerprint(), hf->Fingerprint());
  fs::remove_all(dir);
}

TEST(LlamaModelTest, DecoderLayersComposeToFullForward) {
  auto model = LlamaModel::Load(BundledModel());
  ASSERT_TRUE(model.ok());
  const at::Tensor tokens = at::randint(0, 512, {3, 17}, at::kLong);
  ComputeOptions cpu;
  auto hidden = model->Embed(tokens, cpu);
  ASSERT_TRUE(hidden.ok());
  int observed = 0;
  LinearInputObserver observer = [&](int index, const at::Tensor& input) {
    EXPECT_EQ(input.size(0), 3);
    EXPECT_EQ(input.size(-1), index == 6 ? 172 : 64);
    ++observed;
  };
  at::Tensor h = *hidden;
  for (int l = 0; l < 5; ++l) {
    auto w = model->Layer(l, cpu);
    ASSERT_TRUE(w.ok());
    auto next = model->DecoderLayerForward(*w, h, &observer);
    ASSERT_TRUE(next.ok());
    h = *next;
  }
  EXPECT_EQ(observed, 5 * kNumLinears);
  auto logits = model->Logits(h, cpu);
  auto full = model->Forward(tokens, cpu);
  ASSERT_TRUE(logits.ok() && full.ok());
  EXPECT_TRUE(at::equal(*logits, *full));
  EXPECT_FALSE(model->Layer(5, cpu).ok());
}

TEST(LlamaModelTest, KvCacheStepsMatchTheFullForward) {
  auto model = LlamaModel::Load(BundledModel());
  ASSERT_TRUE(model.ok());
  const at::Tensor tokens = at::randint(0, 512, {2, 20}, at::kLong);
  ComputeOptions cpu;
  auto full = model->Forward(tokens, cpu);
  ASSERT_TRUE(full.ok());
  // A 12-token prefix in one step, then one token per step.
  std::vector<LayerKvCache> caches(5);
  std::vector<at::Tensor> step_logits;
  for (int64_t start = 0; start < 20; start += start == 0 ? 12 : 1) {
    const int64_t len = start == 0 ? 12 : 1;
    auto h = model->Embed(tokens.narrow(1, start, len), cpu);
    ASSERT_TRUE(h.ok());
    at::Tensor hidden = *h;
    for (int l = 0; l < 5; ++l) {
      auto next = model->DecoderLayerStep(*model->Layer(l, cpu), hidden, &caches[l]);
      ASSERT_TRUE(next.ok()) << next.status();
      hidden = *next;
    }
    step_logits.push_back(*model->Logits(hidden, cpu));
  }
  EXPECT_EQ(caches[0].tokens(), 20);
  const at::Tensor incremental = at::cat(step_logits, 1);
  EXPECT_LT((incremental - *full).abs().max().item<float>(), 1e-4);
  // The cache belongs to one batch size.
  auto other = model->Embed(tokens.narrow(0, 0, 1).narrow(1, 0, 1), cpu);
  EXPECT_FALSE(model->DecoderLayerStep(*model->Layer(0, cpu), *other, &caches[0]).ok());
}

TEST(LlamaModelTest, HalfPrecisionsStayCloseToFloat32) {
  auto model = LlamaModel::Load(BundledModel());
  ASSERT_TRUE(model.ok());
  const at::Tensor tokens = at::randint(0, 512, {2, 32}, at::kLong);
  auto reference = model->Forward(tokens, ComputeOptions{});
  ASSERT_TRUE(reference.ok());
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    auto cast = model->CastTo(dtype);
    ASSERT_TRUE(cast.ok());
    EXPECT_EQ(cast->config().dtype, dtype);
    // On the CPU the checkpoint's half precision computes in float32 unless asked for;
    // bfloat16 can be asked for, float16 cannot.
    EXPECT_EQ(cast->ComputeDtype(ComputeOptions{}), at::kFloat);
    EXPECT_EQ(cast->ComputeDtype(ComputeOptions{at::kCPU, dtype}), dtype == at::kBFloat16 ? at::kBFloat16 : at::kFloat);
    auto logits = cast->Forward(tokens, ComputeOptions{at::kCPU, dtype});
    ASSERT_TRUE(logits.ok()) << logits.status();
    const double err = (*logits - *reference).abs().max().item<double>();
    EXPECT_LT(err, dtype == at::kBFloat16 ? 0.5 : 0.05) << at::toString(dtype);
    EXPECT_GT(err, 0.0);
    // Round trip through safetensors keeps the dtype and the bytes.
    const std::string dir = TempDir(std::string("dtype_") + at::toString(dtype));
    ASSERT_TRUE(cast->SaveHf(dir).ok());
    auto reloaded = LlamaModel::Load(dir);
    ASSERT_TRUE(reloaded.ok()) << reloaded.status();
    EXPECT_EQ(reloaded->config().dtype, dtype);
    EXPECT_EQ(reloaded->Fingerprint(), cast->Fingerprint());
    fs::remove_all(dir);
  }
}

TEST(LlamaModelTest, ShardedCheckpointLoads) {
  auto model = LlamaModel::Load(BundledModel());
  ASSERT_TRUE(model.ok());
  const std::string dir = TempDir("sharded");
  TensorMap first, second;
  nlohmann::json weight_map;
  int i = 0;
  for (const auto& [name, t] : model->tensors()) {
    const std::string shard = (i++ % 2 == 0) ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    (i % 2 == 1 ? first : second)[name] = t;
    weight_map[name] = shard;
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors", first).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors", second).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/model.safetensors.index.json", nlohmann::json{{"weight_map", weight_map}}.dump()).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", model->config().ToHfJson().dump()).ok());
  auto sharded = LlamaModel::Load(dir);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(sharded->Fingerprint(), model->Fingerprint());
  fs::remove_all(dir);
}

TEST(ComputeOptionsTest, DeviceAndDtypeSpellings) {
  const CudaInventory cuda = ProbeCuda();
  auto automatic = ParseComputeOptions("auto", "");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ(automatic->device, cuda.device_count > 0 ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU));
  EXPECT_EQ(automatic->dtype, at::ScalarType::Undefined);
  EXPECT_EQ(DescribeDevice(*automatic, "auto"), DescribeDevice(automatic->device, "auto", cuda));
  auto cpu = ParseComputeOptions("cpu", "bfloat16");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cpu->device.is_cpu());
  EXPECT_EQ(cpu->dtype, at::kBFloat16);
  EXPECT_EQ(ParseComputeOptions("gpu", "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseComputeOptions("cpu", "int8").status().code(), absl::StatusCode::kInvalidArgument);
  if (cuda.device_count == 0) {
    EXPECT_EQ(ParseComputeOptions("cuda:0", "").status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(PerplexityTest, WindowsAreNonOverlappingAndRemainderDropped) {
  auto model = LlamaModel::Load(BundledModel());
  ASSERT_TRUE(model.ok());
  std::vector<int> tokens(2 * 16 + 5);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 37 + 11) % 512);
  PerplexityOptions options;
  options.seqlen = 16;
  options.batch_size = 1;
  int64_t calls = 0;
  auto result = EvaluatePerplexity(*model, tokens, options, [&](int64_t, int64_t total) { ++calls; EXPECT_EQ(total, 2); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->windows, 2);
  EXPECT_EQ(result->predicted_tokens, 30);
  EXPECT_EQ(calls, 2);
  double manual = 0;
  for (int w = 0; w < 2; ++w) {
    auto nll = SumNll(*model, Tokens(std::vector<int>(tokens.begin() + 16 * w, tokens.begin() + 16 * (w + 1))), ComputeOptions{});
    ASSERT_TRUE(nll.ok());
    manual += *nll;
  }
  EXPECT_NEAR(result->mean_nll, manual / 30.0, 1e-9);
  EXPECT_NEAR(result->perplexity, std::exp(manual / 30.0), 1e-6);
  options.seqlen = 64;
  EXPECT_FALSE(EvaluatePerplexity(*model, tokens, options).ok());
}

}  // namespace
}  // namespace fedprllm
