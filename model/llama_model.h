// LlamaModel: a LLaMA-family causal language model held as named host tensors (Hugging
// Face names, rotate-half RoPE convention), with a LibTorch forward pass that can run the
// whole model or one decoder layer at a time on any device.
//
//   ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::Load("models/stories260K/stories260K.bin"));
//   ASSIGN_OR_RETURN(at::Tensor logits, model.Forward(tokens, ComputeOptions{}));
#pragma once

#include <array>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "common/packed_mask.h"
#include "model/compute_device.h"
#include "model/llama_config.h"
#include "model/safetensors.h"

namespace fedprllm {

// Where and in which precision a forward pass runs. On CPU, float16 compute is carried
// out in float32 (CPU half matmuls are not supported by LibTorch); bfloat16 runs natively.
struct ComputeOptions {
  at::Device device = at::kCPU;
  // Compute dtype; Undefined means the checkpoint's dtype, except on the CPU, where a
  // float16 or bfloat16 checkpoint computes in float32 (LibTorch's CPU half-precision
  // matmuls are much slower). float16 is float32 on the CPU even when asked for.
  at::ScalarType dtype = at::ScalarType::Undefined;
};

// Parses a device and a compute dtype as users write them. Device: "auto" (cuda:0 when this
// LibTorch has CUDA and the machine a visible device, else the CPU), "cpu", "cuda" (cuda:0)
// or "cuda:N", resolved by ResolveDevice (model/compute_device.h). Dtype: "float32",
// "bfloat16", "float16", or "" for the checkpoint's. Errors: INVALID_ARGUMENT for an unknown
// spelling, FAILED_PRECONDITION for a CUDA device this build or machine lacks.
absl::StatusOr<ComputeOptions> ParseComputeOptions(const std::string& device, const std::string& dtype);
// The device a site computes on and why, for its log, from ProbeCuda():
// "cuda:0 (device: auto; NVIDIA H200, 140 GiB; 1 CUDA device)",
// "cpu (device: auto; this LibTorch has no CUDA)", "cpu (device: cpu; 1 CUDA device not used)".
std::string DescribeDevice(const ComputeOptions& options, const std::string& requested);

// One decoder layer's tensors on one device, in the compute dtype.
struct DecoderLayerWeights {
  at::Tensor input_layernorm;
  at::Tensor post_attention_layernorm;
  std::array<at::Tensor, kNumLinears> linears;  // [out, in], ordered as kLinearNames
  // [out] for the linears that have a bias (LlamaConfig::linear_has_bias), else undefined.
  std::array<at::Tensor, kNumLinears> biases;
};

// A tensor as SaveHf writes it: the value (the stored tensor's shape and dtype) and, for a
// pruned matrix, the hex SHA-256 of its prune mask's packed bytes (1 = pruned, row-major,
// least significant bit first: docs/mask_wire_format.md); empty for a tensor not pruned.
struct SavedTensor {
  at::Tensor value;
  std::string mask_sha256;
};
using SaveTransform = std::function<absl::StatusOr<SavedTensor>(const std::string& name, const at::Tensor& stored)>;

// Hex SHA-256 of a prune mask as SavedTensor::mask_sha256 defines it.
std::string MaskSha256(const PackedMask& mask);

struct HfSaveOptions {
  // A tokenizer file to place in the output as tokenizer.json (a .json file, with the
  // tokenizer_config.json and special_tokens_map.json beside it) or tokenizer.model (anything
  // else), unless the source directory already provided a file of that name. Default: none.
  std::string tokenizer_path;
  // What is written for each tensor, one at a time, in file order. Default: the stored value.
  SaveTransform transform;
  // Pruning settings. When non-empty they go into every shard's __metadata__ (as
  // "fedprllm.<key>"), with the mask digests of that shard's tensors
  // ("fedprllm.mask_sha256.<tensor>"), and pruning_report.json is written beside the shards.
  std::map<std::string, std::string> settings;
  // Merged into pruning_report.json (for example per-matrix sparsity). Default: null.
  nlohmann::json report;
  // Shard size for a model without a source layout (llama2.c): Hugging Face's 5 GB.
  uint64_t max_shard_bytes = 5'000'000'000;
};

// Keys and values one decoder layer has seen, for incremental decoding: each
// [batch * kv_heads, tokens so far, head_dim], undefined before the first step.
struct LayerKvCache {
  at::Tensor keys, values;
  int64_t tokens() const { return keys.defined() ? keys.size(1) : 0; }
};

// Called with each linear layer's input just before its matmul: `input` is
// [batch, tokens, in_features]. q, k and v (0, 1, 2) see the same input, as do gate and up.
using LinearInputObserver = std::function<void(int linear_index, const at::Tensor& input)>;

class LlamaModel {
 public:
  // Loads a Hugging Face directory (config.json + model.safetensors or a sharded index) or
  // a llama2.c legacy checkpoint (a .bin file). Every tensor's name, shape and dtype are
  // checked against the config; errors name the file and the tensor.
  static absl::StatusOr<LlamaModel> Load(const std::string& path);
  // Builds a model from tensors already in memory (validated the same way).
  static absl::StatusOr<LlamaModel> FromTensors(LlamaConfig config, TensorMap tensors,
                                                std::string source);

  const LlamaConfig& config() const { return config_; }
  // Where the model was loaded from (for messages).
  const std::string& source() const { return source_; }
  // All tensors by Hugging Face name, on the host: those of ArchitectureTensors, plus a
  // tied checkpoint's lm_head.weight and rotary_emb.inv_freq buffers when the checkpoint
  // has them (written back, not used by the forward pass).
  const TensorMap& tensors() const { return tensors_; }
  absl::StatusOr<at::Tensor> tensor(const std::string& name) const;
  // Replaces a tensor; its shape must match. The new tensor is stored in the model's dtype.
  absl::Status SetTensor(const std::string& name, const at::Tensor& value);

  // Copies decoder layer `layer` to the device and compute dtype of `options`.
  absl::StatusOr<DecoderLayerWeights> Layer(int64_t layer, const ComputeOptions& options) const;

  // Token embeddings for `tokens` ([batch, seq] int64) -> [batch, seq, hidden].
  absl::StatusOr<at::Tensor> Embed(const at::Tensor& tokens, const ComputeOptions& options) const;
  // Runs one decoder layer. `hidden` is [batch, seq, hidden] on the weights' device and dtype;
  // positions are 0..seq-1. Returns the layer output, same shape.
  absl::StatusOr<at::Tensor> DecoderLayerForward(const DecoderLayerWeights& weights,
                                                 const at::Tensor& hidden,
                                                 const LinearInputObserver* observer = nullptr) const;
  // DecoderLayerForward for the next tokens of sequences whose earlier keys and values are in
  // *cache: positions continue from cache->tokens(), and this step's keys and values are
  // appended. Stepping token by token gives the logits of one full forward (generation).
  absl::StatusOr<at::Tensor> DecoderLayerStep(const DecoderLayerWeights& weights, const at::Tensor& hidden,
                                              LayerKvCache* cache) const;
  // Final RMSNorm and LM head: [batch, seq, hidden] -> float32 logits [batch, seq, vocab].
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& hidden, const ComputeOptions& options) const;
  // Full forward: tokens [batch, seq] -> float32 logits [batch, seq, vocab].
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& tokens, const ComputeOptions& options) const;

  // A copy of the model with every tensor stored in `dtype` (kFloat, kHalf or kBFloat16).
  absl::StatusOr<LlamaModel> CastTo(at::ScalarType dtype) const;

  // Resolves Undefined dtype and CPU half as documented on ComputeOptions.
  at::ScalarType ComputeDtype(const ComputeOptions& options) const;

  // Hex SHA-256 over every tensor's name, shape, dtype and bytes, in name order, plus the
  // config: two sites hold the same base model exactly when their fingerprints agree.
  std::string Fingerprint() const;

  // Writes the model in Hugging Face layout into `dir` (created if needed), in the stored
  // dtype and tensor names, one tensor in memory at a time:
  //  - from a Hugging Face directory: the same shard files with the same tensors, a
  //    model.safetensors.index.json when the source had one, and every other top-level file of
  //    the source copied byte for byte (config.json rewritten only when the dtype changed;
  //    dense weights in other formats and subdirectories are not copied, and
  //    pruning_report.json says so);
  //  - from a llama2.c checkpoint: config.json, generation_config.json and
  //    model.safetensors, or 5 GB shards with an index as Hugging Face names them.
  absl::Status SaveHf(const std::string& dir, const HfSaveOptions& options) const;
  absl::Status SaveHf(const std::string& dir, const std::string& tokenizer_path = "") const;

 private:
  // Where a Hugging Face checkpoint came from: its directory, its shard files with their
  // tensors in file order, its index (null for a single model.safetensors) and its dtype.
  struct SourceLayout {
    std::string dir;
    at::ScalarType dtype = at::kFloat;
    std::vector<std::pair<std::string, std::vector<std::string>>> shards;
    nlohmann::json index;
  };
  static absl::StatusOr<LlamaModel> LoadHfDirectory(const std::string& dir);

  LlamaModel(LlamaConfig config, TensorMap tensors, std::string source)
      : config_(std::move(config)), tensors_(std::move(tensors)), source_(std::move(source)) {}

  at::Tensor RopeRotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  // The decoder layer after `cache`'s tokens (none when cache is null), appending to it.
  absl::StatusOr<at::Tensor> DecoderLayer(const DecoderLayerWeights& weights, const at::Tensor& hidden,
                                          const LinearInputObserver* observer, LayerKvCache* cache) const;

  LlamaConfig config_;
  TensorMap tensors_;
  std::string source_;
  std::optional<SourceLayout> layout_;
};

// Loads a llama2.c legacy ("version 0") checkpoint as Hugging Face-named tensors, with the
// q/k rows permuted from interleaved-pair RoPE to rotate-half RoPE.
absl::StatusOr<LlamaModel> LoadLlama2c(const std::string& path);

}  // namespace fedprllm
