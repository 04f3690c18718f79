// DescribeModelShape: the config's sizes and the parameter count in words.
#include "model/model_summary.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/llama_config.h"

namespace fedprllm {

namespace {

// 260396 -> "260.4K", 6738415616 -> "6.74B".
std::string ShortCount(int64_t n) {
  if (n >= 1000000000) return absl::StrFormat("%.2fB", n / 1e9);
  if (n >= 1000000) return absl::StrFormat("%.1fM", n / 1e6);
  if (n >= 1000) return absl::StrFormat("%.1fK", n / 1e3);
  return absl::StrCat(n);
}

}  // namespace

std::string DescribeModelShape(const LlamaModel& model) {
  const LlamaConfig& c = model.config();
  int64_t parameters = 0;
  for (const auto& [name, tensor] : model.tensors()) parameters += tensor.numel();
  return absl::StrCat(c.num_hidden_layers, " layers, hidden ", c.hidden_size, ", ", c.num_attention_heads, " heads (",
                      c.num_key_value_heads, " kv), intermediate ", c.intermediate_size, ", vocab ", c.vocab_size, ", ",
                      ShortCount(parameters), " parameters, ", TorchDtypeName(c.dtype));
}

}  // namespace fedprllm
