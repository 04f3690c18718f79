// Synthetic checkpoints: the architecture table, the tensor list, and the streaming writer
// of seeded random weights.
#include "model/synthetic_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/splitmix64.h"
#include "common/status_macros.h"
#include "model/llama_model.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;

// Elements generated at once: 64 MB of float32.
constexpr int64_t kChunkElements = int64_t{16} << 20;

struct Architecture {
  const char* name;
  const char* hf_class;
  int64_t hidden, intermediate, layers, heads, kv_heads, vocab, max_positions;
  double rope_theta, rms_norm_eps;
  int64_t bos, eos;
};

// The values of each model's published config.json.
constexpr Architecture kArchitectures[] = {
    {"llama-2-7b", "LlamaForCausalLM", 4096, 11008, 32, 32, 32, 32000, 4096, 1e4, 1e-5, 1, 2},
    {"llama-2-13b", "LlamaForCausalLM", 5120, 13824, 40, 40, 40, 32000, 4096, 1e4, 1e-5, 1, 2},
    {"llama-3-8b", "LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128256, 8192, 5e5, 1e-5, 128000, 128001},
    {"mistral-7b", "MistralForCausalLM", 4096, 14336, 32, 32, 8, 32768, 32768, 1e6, 1e-5, 1, 2},
    {"tinyllama-1.1b", "LlamaForCausalLM", 2048, 5632, 22, 32, 4, 32000, 2048, 1e4, 1e-5, 1, 2},
    {"tiny-test", "LlamaForCausalLM", 64, 176, 2, 4, 2, 512, 256, 1e4, 1e-5, 1, 2},
};

// The standard deviation of tensor `name`'s weights (0: all ones, a norm).
double WeightStd(const std::string& name, const std::vector<int64_t>& shape, const LlamaConfig& config) {
  if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) return 0.02;
  if (shape.size() == 1) return 0.0;
  if (name == "model.embed_tokens.weight") return 1.0;
  const double in_features = static_cast<double>(shape[1]);
  double std = 1.0 / std::sqrt(in_features);
  if (name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos) {
    std /= std::sqrt(2.0 * static_cast<double>(config.num_hidden_layers));
  }
  return std;
}

// Generates `entry`'s values chunk by chunk and appends them to `writer`.
absl::Status WriteTensor(const SafetensorsEntry& entry, const LlamaConfig& config, uint64_t seed,
                         SafetensorsWriter* writer) {
  const double std = WeightStd(entry.name, entry.shape, config);
  const int64_t cols = entry.shape.back();
  const int64_t rows = entry.shape.size() == 1 ? 1 : entry.shape[0];
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElements / cols);
  const uint64_t stream = SplitMix64Mix(seed ^ SplitMix64Mix(Fnv1a64(entry.name)));
  for (int64_t row = 0, chunk = 0; row < rows; row += rows_per_chunk, ++chunk) {
    const int64_t n = std::min(rows_per_chunk, rows - row);
    ASSIGN_OR_RETURN(at::Tensor values, TorchCall(absl::StrCat("generating ", entry.name), [&] {
      if (std == 0.0) return at::ones({n, cols}, at::TensorOptions().dtype(entry.dtype));
      at::Generator generator =
          at::make_generator<at::CPUGeneratorImpl>(SplitMix64Mix(stream + (chunk + 1) * kSplitMix64Increment));
      return at::randn({n, cols}, generator, at::TensorOptions().dtype(at::kFloat)).mul_(std).to(entry.dtype);
    }));
    RETURN_IF_ERROR(writer->Append(
        absl::string_view(static_cast<const char*>(values.data_ptr()), values.numel() * values.element_size())));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> SyntheticArchitectureNames() {
  std::vector<std::string> names;
  for (const Architecture& a : kArchitectures) names.push_back(a.name);
  return names;
}

absl::StatusOr<LlamaConfig> SyntheticArchitecture(const std::string& name) {
  for (const Architecture& a : kArchitectures) {
    if (name != a.name) continue;
    LlamaConfig c;
    c.architecture = a.hf_class;
    c.hidden_size = a.hidden;
    c.intermediate_size = a.intermediate;
    c.num_hidden_layers = a.layers;
    c.num_attention_heads = a.heads;
    c.num_key_value_heads = a.kv_heads;
    c.vocab_size = a.vocab;
    c.max_position_embeddings = a.max_positions;
    c.rope_theta = a.rope_theta;
    c.rms_norm_eps = a.rms_norm_eps;
    c.bos_token_id = a.bos;
    c.eos_token_id = a.eos;
    c.dtype = at::kBFloat16;
    return c;
  }
  return absl::NotFoundError(absl::StrCat("unknown architecture \"", name, "\"; known: ",
                                          absl::StrJoin(SyntheticArchitectureNames(), ", ")));
}

std::vector<SafetensorsEntry> CheckpointEntries(const LlamaConfig& c) {
  std::vector<SafetensorsEntry> entries;
  for (auto& [name, shape] : ArchitectureTensors(c)) entries.push_back({name, c.dtype, shape});
  return entries;
}

int64_t ParameterCount(const LlamaConfig& config) {
  int64_t n = 0;
  for (const SafetensorsEntry& e : CheckpointEntries(config)) n += static_cast<int64_t>(e.bytes() / at::elementSize(e.dtype));
  return n;
}

absl::Status WriteSyntheticCheckpoint(const LlamaConfig& config, const SyntheticOptions& options,
                                      const std::string& dir) {
  RETURN_IF_ERROR(config.Validate());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  // Shards: consecutive tensors, a new one before a tensor that would pass the limit.
  std::vector<std::vector<SafetensorsEntry>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (SafetensorsEntry& e : CheckpointEntries(config)) {
    if (!shards.back().empty() && shard_bytes + e.bytes() > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += e.bytes();
    total_bytes += e.bytes();
    shards.back().push_back(std::move(e));
  }
  const size_t n = shards.size();
  auto shard_name = [n](size_t i) {
    return n == 1 ? std::string("model.safetensors")
                  : absl::StrFormat("model-%05d-of-%05d.safetensors", static_cast<int>(i + 1), static_cast<int>(n));
  };
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t written = 0;
  for (size_t i = 0; i < n; ++i) {
    for (const SafetensorsEntry& e : shards[i]) weight_map[e.name] = shard_name(i);
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                     SafetensorsWriter::Create((fs::path(dir) / shard_name(i)).string(), shards[i]));
    for (const SafetensorsEntry& e : shards[i]) {
      RETURN_IF_ERROR(WriteTensor(e, config, options.seed, writer.get()));
      written += e.bytes();
      if (options.progress) options.progress(written, total_bytes);
    }
    RETURN_IF_ERROR(writer->Finish());
  }
  if (n > 1) {
    const nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n"));
  }
  RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "config.json").string(), config.ToHfJson().dump(2) + "\n"));
  const nlohmann::json generation = {{"bos_token_id", config.bos_token_id}, {"eos_token_id", config.eos_token_id}};
  RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "generation_config.json").string(), generation.dump(2) + "\n"));
  if (!options.tokenizer.empty()) {
    std::ifstream in(options.tokenizer, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read tokenizer ", options.tokenizer));
    std::stringstream buffer;
    buffer << in.rdbuf();
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "tokenizer.model").string(), buffer.str()));
  }
  return absl::OkStatus();
}

}  // namespace fedprllm
