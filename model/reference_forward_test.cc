// Checks the forward pass of every supported LLaMA-family configuration against an
// independent numpy implementation (tests/reference_forward.py, run with python3-numpy):
// logits within 1e-4, and biases that change the numbers when present.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "model/llama_model.h"
#include "model/perplexity.h"
#include "model/test_paths.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;

class ReferenceForwardTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Writes the configuration's tiny model and the reference logits into a fresh directory.
  std::string WriteReference(const std::string& config) {
    const std::string dir = (fs::path(::testing::TempDir()) / ("reference-" + config)).string();
    fs::remove_all(dir);
    // Debian's interpreter, which python3-numpy installs for (not one found first on PATH).
    const std::string command = "/usr/bin/python3 " + testing::SourceDir() + "/tests/reference_forward.py --config " +
                                config + " --out " + dir;
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    return dir;
  }
};

TEST_P(ReferenceForwardTest, LogitsMatchTheNumpyReference) {
  const std::string dir = WriteReference(GetParam());
  if (HasFailure()) return;
  auto model = LlamaModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  auto reference = ReadSafetensors(dir + "/reference.safetensors");
  ASSERT_TRUE(reference.ok()) << reference.status();
  const at::Tensor tokens = reference->at("tokens").to(at::kLong);
  const at::Tensor expected = reference->at("logits");
  auto logits = model->Forward(tokens, ComputeOptions{});
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->sizes(), expected.sizes());
  const double max_error = (*logits - expected).abs().max().item<double>();
  EXPECT_LT(max_error, 1e-4) << GetParam() << ": largest logit difference " << max_error;
  // The logits are not trivially small: the comparison means something.
  EXPECT_GT(expected.abs().max().item<double>(), 0.5);

  // With biases present, dropping them changes the perplexity.
  bool has_bias = false;
  LlamaModel without_biases = *model;
  for (const auto& [name, tensor] : model->tensors()) {
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      has_bias = true;
      ASSERT_TRUE(without_biases.SetTensor(name, at::zeros_like(tensor)).ok());
    }
  }
  if (has_bias) {
    auto with = SumNll(*model, tokens, ComputeOptions{});
    auto without = SumNll(without_biases, tokens, ComputeOptions{});
    ASSERT_TRUE(with.ok() && without.ok());
    EXPECT_GT(std::abs(*with - *without), 1e-3 * std::abs(*with)) << GetParam() << ": biases did not change the NLL";
  }
}

INSTANTIATE_TEST_SUITE_P(Configurations, ReferenceForwardTest,
                         ::testing::Values("llama2", "llama-bias", "llama3.1", "llama-linear", "llama-dynamic",
                                           "mistral", "qwen2"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name;
                           for (char c : info.param) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

}  // namespace
}  // namespace fedprllm
