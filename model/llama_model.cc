// LlamaModel: loading dispatch, validation, forward pass, fingerprint and HF writer.
#include "model/llama_model.h"

#include <openssl/evp.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/packed_mask.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "model/causal_attention.h"
#include "model/cpu_runtime.h"  // IsSmallModel
#include "model/perplexity.h"  // ReadTextFile
#include "model/rotary_embedding.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace fs = std::filesystem;

namespace {

// Tensors a checkpoint may hold beyond ArchitectureTensors, kept and written back but not
// used: the lm_head of a tied model and the RoPE buffers older transformers saved.
bool IsIgnorableExtraTensor(const LlamaConfig& c, const std::string& name) {
  if (c.tie_word_embeddings && name == "lm_head.weight") return true;
  const std::string suffix = ".self_attn.rotary_emb.inv_freq";
  return name.rfind("model.layers.", 0) == 0 && name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::DataLossError(absl::StrCat(path, ": not valid JSON"));
  return json;
}

}  // namespace

absl::StatusOr<LlamaModel> LlamaModel::LoadHfDirectory(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  ASSIGN_OR_RETURN(nlohmann::json config_json, ReadJsonFile(config_path));
  auto config = LlamaConfig::FromHfJson(config_json);
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(config_path, ": ", config.status().message()));
  SourceLayout layout;
  layout.dir = dir;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(single)) {
    files.push_back("model.safetensors");
  } else if (fs::exists(index)) {
    ASSIGN_OR_RETURN(layout.index, ReadJsonFile(index.string()));
    if (!layout.index.is_object() || !layout.index.contains("weight_map") || !layout.index["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": no weight_map object"));
    }
    std::set<std::string> shards;
    for (const auto& [name, file] : layout.index["weight_map"].items()) {
      if (!file.is_string()) return absl::DataLossError(absl::StrCat(index.string(), ": weight_map[", name, "] is not a file name"));
      const std::string shard = file.get<std::string>();
      if (shard.find('/') != std::string::npos || shard.empty() || shard[0] == '.') {
        return absl::DataLossError(absl::StrCat(index.string(), ": shard name ", shard, " is not a plain file name"));
      }
      shards.insert(shard);
    }
    files.assign(shards.begin(), shards.end());
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": neither model.safetensors nor model.safetensors.index.json"));
  }
  TensorMap tensors;
  for (const auto& file : files) {
    const std::string path = (fs::path(dir) / file).string();
    std::vector<std::string> order;
    ASSIGN_OR_RETURN(TensorMap part, ReadSafetensors(path, &order));
    for (auto& [name, t] : part) {
      if (!layout.index.is_null()) {
        const auto& mapped = layout.index["weight_map"];
        if (!mapped.contains(name) || mapped[name] != file) {
          return absl::DataLossError(absl::StrCat(path, ": tensor ", name, " is not mapped to this file by ",
                                                  index.string()));
        }
      }
      if (!tensors.emplace(name, std::move(t)).second) {
        return absl::DataLossError(absl::StrCat(path, ": tensor ", name, " appears in two shards"));
      }
    }
    layout.shards.emplace_back(file, std::move(order));
  }
  if (!layout.index.is_null()) {
    for (const auto& [name, file] : layout.index["weight_map"].items()) {
      if (tensors.count(name) == 0) {
        return absl::DataLossError(absl::StrCat(index.string(), ": tensor ", name, " is not in ", file.get<std::string>()));
      }
    }
  }
  if (auto it = tensors.find("model.embed_tokens.weight"); it != tensors.end()) {
    config->dtype = it->second.scalar_type();
  }
  layout.dtype = config->dtype;
  ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::FromTensors(*std::move(config), std::move(tensors), dir));
  model.layout_ = std::move(layout);
  return model;
}

absl::StatusOr<LlamaModel> LlamaModel::Load(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return LoadHfDirectory(path);
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat("model not found: ", path));
  if (path.size() >= 4 && path.substr(path.size() - 4) == ".bin") return LoadLlama2c(path);
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": not a model (expected a Hugging Face directory or a llama2.c .bin checkpoint)"));
}

absl::StatusOr<LlamaModel> LlamaModel::FromTensors(LlamaConfig config, TensorMap tensors,
                                                   std::string source) {
  RETURN_IF_ERROR(config.Validate());
  const auto expected = ArchitectureTensors(config);
  std::set<std::string> expected_names;
  for (const auto& [name, shape] : expected) expected_names.insert(name);
  for (const auto& [name, t] : tensors) {
    if (expected_names.count(name) == 0 && !IsIgnorableExtraTensor(config, name)) {
      const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
      return absl::DataLossError(absl::StrCat(
          source, ": tensor ", name, " is not part of a ", config.architecture, " with this config",
          bias ? " (a bias, but config.json does not enable attention_bias / mlp_bias for it)" : "",
          "; refusing it rather than ignoring it"));
    }
  }
  for (const auto& [name, shape] : expected) {
    auto it = tensors.find(name);
    if (it == tensors.end()) return absl::DataLossError(absl::StrCat(source, ": tensor ", name, " is missing"));
    const at::Tensor& t = it->second;
    if (t.sizes().vec() != shape) {
      return absl::DataLossError(absl::StrCat(source, ": tensor ", name, " has shape ", ShapeToString(t.sizes().vec()),
                                              ", the config needs ", ShapeToString(shape)));
    }
    const at::ScalarType dtype = t.scalar_type();
    if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
      return absl::DataLossError(absl::StrCat(source, ": tensor ", name, " has unsupported dtype ", at::toString(dtype)));
    }
  }
  return LlamaModel(std::move(config), std::move(tensors), std::move(source));
}

absl::StatusOr<at::Tensor> LlamaModel::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat(source_, ": no tensor ", name));
  return it->second;
}

absl::Status LlamaModel::SetTensor(const std::string& name, const at::Tensor& value) {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat(source_, ": no tensor ", name));
  if (value.sizes() != it->second.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("SetTensor ", name, ": shape ", ShapeToString(value.sizes().vec()),
                                                   " != ", ShapeToString(it->second.sizes().vec())));
  }
  return TorchCall(absl::StrCat("storing ", name), [&] {
    it->second = value.to(at::kCPU, it->second.scalar_type()).contiguous().clone();
  });
}

absl::StatusOr<LlamaModel> LlamaModel::CastTo(at::ScalarType dtype) const {
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat("cannot store a model as ", at::toString(dtype)));
  }
  LlamaConfig config = config_;
  config.dtype = dtype;
  TensorMap tensors;
  RETURN_IF_ERROR(TorchCall(absl::StrCat("casting the model to ", TorchDtypeName(dtype)), [&] {
    for (const auto& [name, t] : tensors_) tensors[name] = t.to(dtype).contiguous();
  }));
  LlamaModel cast(std::move(config), std::move(tensors), source_);
  cast.layout_ = layout_;  // same files and names; SaveHf rewrites config.json's torch_dtype
  return cast;
}

absl::StatusOr<ComputeOptions> ParseComputeOptions(const std::string& device, const std::string& dtype) {
  ComputeOptions options;
  ASSIGN_OR_RETURN(options.device, ResolveDevice(device, ProbeCuda()));
  if (!dtype.empty()) {
    ASSIGN_OR_RETURN(options.dtype, DtypeFromTorchName(dtype));
  }
  return options;
}

std::string DescribeDevice(const ComputeOptions& options, const std::string& requested) {
  return DescribeDevice(options.device, requested, ProbeCuda());
}

at::ScalarType LlamaModel::ComputeDtype(const ComputeOptions& options) const {
  at::ScalarType dtype = options.dtype == at::ScalarType::Undefined ? config_.dtype : options.dtype;
  if (options.device.is_cpu() && (dtype == at::kHalf || (dtype == at::kBFloat16 && options.dtype == at::ScalarType::Undefined))) {
    dtype = at::kFloat;
  }
  return dtype;
}

absl::StatusOr<DecoderLayerWeights> LlamaModel::Layer(int64_t layer, const ComputeOptions& options) const {
  if (layer < 0 || layer >= config_.num_hidden_layers) {
    return absl::OutOfRangeError(absl::StrCat("decoder layer ", layer, " out of range [0, ", config_.num_hidden_layers, ")"));
  }
  const at::ScalarType dtype = ComputeDtype(options);
  return TorchCall(absl::StrCat("moving decoder layer ", layer, " to ", options.device.str()), [&] {
    auto get = [&](absl::string_view suffix) {
      return tensors_.at(LayerTensorName(layer, suffix)).to(options.device, dtype);
    };
    DecoderLayerWeights w;
    w.input_layernorm = get("input_layernorm");
    w.post_attention_layernorm = get("post_attention_layernorm");
    const std::array<bool, kNumLinears> has_bias = config_.linear_has_bias();
    for (int k = 0; k < kNumLinears; ++k) {
      w.linears[k] = get(kLinearNames[k]);
      if (has_bias[k]) w.biases[k] = tensors_.at(LayerBiasName(layer, kLinearNames[k])).to(options.device, dtype);
    }
    return w;
  });
}

absl::StatusOr<at::Tensor> LlamaModel::Embed(const at::Tensor& tokens, const ComputeOptions& options) const {
  return TorchCall("embedding tokens", [&] {
    TORCH_CHECK(tokens.dim() == 2, "tokens must be [batch, seq]");
    TORCH_CHECK(tokens.numel() == 0 || (tokens.min().item<int64_t>() >= 0 &&
                                        tokens.max().item<int64_t>() < config_.vocab_size),
                "token id out of range [0, ", config_.vocab_size, ")");
    const at::Tensor& table = tensors_.at("model.embed_tokens.weight");
    return table.index_select(0, tokens.reshape({-1}).to(at::kCPU, at::kLong))
        .to(options.device, ComputeDtype(options))
        .reshape({tokens.size(0), tokens.size(1), config_.hidden_size});
  });
}

namespace {

// HF LlamaRMSNorm: normalize in float32, cast back, then scale.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

}  // namespace

at::Tensor LlamaModel::RopeRotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

absl::StatusOr<at::Tensor> LlamaModel::DecoderLayerForward(const DecoderLayerWeights& w, const at::Tensor& hidden,
                                                           const LinearInputObserver* observer) const {
  return DecoderLayer(w, hidden, observer, nullptr);
}

absl::StatusOr<at::Tensor> LlamaModel::DecoderLayerStep(const DecoderLayerWeights& w, const at::Tensor& hidden,
                                                        LayerKvCache* cache) const {
  return DecoderLayer(w, hidden, nullptr, cache);
}

absl::StatusOr<at::Tensor> LlamaModel::DecoderLayer(const DecoderLayerWeights& w, const at::Tensor& hidden,
                                                    const LinearInputObserver* observer, LayerKvCache* cache) const {
  return TorchCall("decoder layer forward", [&] {
    TORCH_CHECK(hidden.dim() == 3 && hidden.size(2) == config_.hidden_size, "hidden must be [batch, seq, ",
                config_.hidden_size, "]");
    const int64_t batch = hidden.size(0), seq = hidden.size(1);
    const int64_t heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads;
    const int64_t head_dim = config_.head_dim();
    const int64_t past = cache == nullptr ? 0 : cache->tokens();
    TORCH_CHECK(past == 0 || cache->keys.size(0) == batch * kv_heads, "KV cache holds another batch size");
    if (absl::Status fits = config_.CheckSequenceLength(past + seq); !fits.ok()) TORCH_CHECK(false, fits.ToString());
    auto linear = [&](int index, const at::Tensor& input) {
      if (observer != nullptr && *observer) (*observer)(index, input);
      const at::Tensor out = at::matmul(input, w.linears[index].t());
      return w.biases[index].defined() ? out + w.biases[index] : out;
    };
    // Linears first .. first + count - 1, which read the same input (q, k, v; gate, up). A small
    // model on the CPU multiplies them as one matrix (the weights concatenated for this call,
    // a few hundred KiB): one GEMM of N = the summed outputs instead of several thin ones. The
    // outputs are column slices of it, each the same dot products as its own matmul.
    const bool fuse = hidden.device().is_cpu() && IsSmallModel(config_.hidden_size);
    auto linears = [&](int first, int count, const at::Tensor& input) {
      std::vector<at::Tensor> outs;
      bool all_bias = true, no_bias = true;
      for (int i = first; i < first + count; ++i) {
        all_bias = all_bias && w.biases[i].defined();
        no_bias = no_bias && !w.biases[i].defined();
      }
      if (!fuse || !(all_bias || no_bias)) {
        for (int i = first; i < first + count; ++i) outs.push_back(linear(i, input));
        return outs;
      }
      std::vector<at::Tensor> weights, biases;
      for (int i = first; i < first + count; ++i) {
        if (observer != nullptr && *observer) (*observer)(i, input);
        weights.push_back(w.linears[i]);
        if (all_bias) biases.push_back(w.biases[i]);
      }
      at::Tensor out = at::matmul(input, at::cat(weights, 0).t());
      if (all_bias) out = out + at::cat(biases, 0);
      int64_t offset = 0;
      for (const at::Tensor& weight : weights) {
        outs.push_back(out.narrow(-1, offset, weight.size(0)));
        offset += weight.size(0);
      }
      return outs;
    };
    // Attention block. Query head h reads key/value head h / group (HF's repeat_kv), so the
    // queries of one key/value head are stacked into a single batch entry of
    // [seq * group, head_dim] rows (row s * group + g is position past + s of head
    // kv * group + g): no copies of k and v.
    const int64_t group = heads / kv_heads;
    const at::Tensor x = RmsNorm(hidden, w.input_layernorm, config_.rms_norm_eps);
    const RopeTables rope = CachedRopeTables(config_, past, seq, past + seq, hidden.device(), hidden.scalar_type());
    const bool blocked = hidden.device().is_cpu();
    const std::vector<at::Tensor> qkv = linears(0, 3, x);
    at::Tensor q, k;
    if (blocked) {
      q = RotateToHeadMajor(qkv[0].view({batch, seq, heads, head_dim}), rope.cos, rope.sin, kv_heads);
      k = RotateToHeadMajor(qkv[1].view({batch, seq, kv_heads, head_dim}), rope.cos, rope.sin, kv_heads);
    } else {
      q = RopeRotate(qkv[0].view({batch, seq, heads, head_dim}), rope.cos, rope.sin)
              .view({batch, seq, kv_heads, group, head_dim})
              .permute({0, 2, 3, 1, 4})
              .reshape({batch * kv_heads, group * seq, head_dim});
      k = RopeRotate(qkv[1].view({batch, seq, kv_heads, head_dim}), rope.cos, rope.sin)
              .transpose(1, 2)
              .reshape({batch * kv_heads, seq, head_dim});
    }
    at::Tensor v = qkv[2].view({batch, seq, kv_heads, head_dim}).transpose(1, 2).reshape(
        {batch * kv_heads, seq, head_dim});
    if (cache != nullptr) {
      if (past > 0) {
        k = at::cat({cache->keys, k}, 1);
        v = at::cat({cache->values, v}, 1);
      }
      cache->keys = k;
      cache->values = v;
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    at::Tensor attn;
    if (blocked) {
      attn = CausalAttention(q, k, v, past, group, scale)
                 .view({batch, kv_heads, seq, group, head_dim})
                 .permute({0, 2, 1, 3, 4})
                 .reshape({batch, seq, heads * head_dim});
    } else {
      // One baddbmm over the full score matrix, masked: query i (position past + i) sees keys
      // 0 .. past + i. Kept for accelerators, whose fused kernels favour few large calls.
      const at::Tensor causal_mask = at::full({seq, past + seq}, -std::numeric_limits<float>::infinity(),
                                              at::TensorOptions().dtype(hidden.scalar_type()).device(hidden.device()))
                                         .triu_(past + 1)
                                         .repeat({group, 1});  // [group * seq, past + seq]
      const at::Tensor scores = at::baddbmm(causal_mask, q, k.transpose(1, 2), /*beta=*/1.0, /*alpha=*/scale);
      const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(hidden.scalar_type());
      attn = at::bmm(probs, v)
                 .view({batch, kv_heads, group, seq, head_dim})
                 .permute({0, 3, 1, 2, 4})
                 .reshape({batch, seq, heads * head_dim});
    }
    const at::Tensor after_attn = hidden + linear(3, attn);
    // MLP block.
    const at::Tensor y = RmsNorm(after_attn, w.post_attention_layernorm, config_.rms_norm_eps);
    const std::vector<at::Tensor> gate_up = linears(4, 2, y);
    const at::Tensor act = at::silu(gate_up[0]) * gate_up[1];
    return after_attn + linear(6, act);
  });
}

absl::StatusOr<at::Tensor> LlamaModel::Logits(const at::Tensor& hidden, const ComputeOptions& options) const {
  return TorchCall("LM head", [&] {
    const at::ScalarType dtype = ComputeDtype(options);
    const at::Tensor norm = tensors_.at("model.norm.weight").to(options.device, dtype);
    const std::string head = config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    const at::Tensor head_weight = tensors_.at(head).to(options.device, dtype);
    return at::matmul(RmsNorm(hidden, norm, config_.rms_norm_eps), head_weight.t()).to(at::kFloat);
  });
}

absl::StatusOr<at::Tensor> LlamaModel::Forward(const at::Tensor& tokens, const ComputeOptions& options) const {
  ASSIGN_OR_RETURN(at::Tensor hidden, Embed(tokens, options));
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    ASSIGN_OR_RETURN(DecoderLayerWeights weights, Layer(l, options));
    ASSIGN_OR_RETURN(hidden, DecoderLayerForward(weights, hidden));
  }
  return Logits(hidden, options);
}

std::string LlamaModel::Fingerprint() const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  const std::string config_text = config_.ToHfJson().dump();
  EVP_DigestUpdate(ctx, config_text.data(), config_text.size());
  for (const auto& [name, tensor] : tensors_) {
    const at::Tensor t = tensor.contiguous();
    const std::string meta = absl::StrCat(name, "|", ShapeToString(t.sizes().vec()), "|",
                                          SafetensorsDtypeName(t.scalar_type()), "|");
    EVP_DigestUpdate(ctx, meta.data(), meta.size());
    EVP_DigestUpdate(ctx, t.data_ptr(), t.numel() * t.element_size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx, digest, &length);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

std::string MaskSha256(const PackedMask& mask) {
  return Sha256Hex(absl::string_view(reinterpret_cast<const char*>(mask.bytes().data()), mask.bytes().size()));
}

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Why a top-level file of a source directory is not copied into a written checkpoint, or
// empty when it is copied byte for byte.
std::string WhyNotCopied(const std::string& name, const std::set<std::string>& shard_files) {
  if (shard_files.count(name) != 0 || name == "model.safetensors.index.json") return "weights (rewritten)";
  if (name == "pruning_report.json") return "rewritten for this checkpoint";
  for (const char* suffix : {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt", ".bin.index.json",
                             ".safetensors.index.json"}) {
    if (EndsWith(name, suffix)) return "dense weights in another file or format";
  }
  if (name.find(".tmp.") != std::string::npos) return "a temporary file";
  return "";
}


}  // namespace

absl::Status LlamaModel::SaveHf(const std::string& dir, const std::string& tokenizer_path) const {
  HfSaveOptions options;
  options.tokenizer_path = tokenizer_path;
  return SaveHf(dir, options);
}

absl::Status LlamaModel::SaveHf(const std::string& dir, const HfSaveOptions& options) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  // Shards: the source's, or Hugging Face's naming for a model without one.
  std::vector<std::pair<std::string, std::vector<std::string>>> shards;
  if (layout_.has_value()) {
    shards = layout_->shards;
  } else {
    std::vector<std::string> names;
    for (const auto& [name, shape] : ArchitectureTensors(config_)) names.push_back(name);
    for (const auto& [name, t] : tensors_) {
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
    uint64_t shard_bytes = 0;
    shards.emplace_back("", std::vector<std::string>{});
    for (const std::string& name : names) {
      const at::Tensor& t = tensors_.at(name);
      const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
      if (!shards.back().second.empty() && shard_bytes + bytes > options.max_shard_bytes) {
        shards.emplace_back("", std::vector<std::string>{});
        shard_bytes = 0;
      }
      shard_bytes += bytes;
      shards.back().second.push_back(name);
    }
    for (size_t i = 0; i < shards.size(); ++i) {
      shards[i].first = shards.size() == 1 ? std::string("model.safetensors")
                                           : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    }
  }

  std::map<std::string, std::string> shared_metadata;
  for (const auto& [key, value] : options.settings) shared_metadata["fedprllm." + key] = value;
  const bool report = !options.settings.empty();
  nlohmann::json digests = nlohmann::json::object();
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total_bytes = 0;
  const std::string digest_prefix = "fedprllm.mask_sha256.";
  RETURN_IF_ERROR(TorchCall(absl::StrCat("writing ", dir), [&]() -> absl::Status {
    for (const auto& [file, names] : shards) {
      std::vector<SafetensorsEntry> entries;
      uint64_t reserve = 0;
      for (const std::string& name : names) {
        const at::Tensor& t = tensors_.at(name);
        entries.push_back({name, t.scalar_type(), t.sizes().vec()});
        if (report) reserve += digest_prefix.size() + name.size() + 64 + 8;  // "key":"hex",
        weight_map[name] = file;
        total_bytes += entries.back().bytes();
      }
      const std::string path = (fs::path(dir) / file).string();
      ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                       SafetensorsWriter::Create(path, std::move(entries), shared_metadata, reserve));
      std::map<std::string, std::string> metadata = shared_metadata;
      for (const std::string& name : names) {
        const at::Tensor& stored = tensors_.at(name);
        SavedTensor saved{stored, ""};
        if (options.transform) {
          ASSIGN_OR_RETURN(saved, options.transform(name, stored));
          if (saved.value.sizes() != stored.sizes() || saved.value.scalar_type() != stored.scalar_type()) {
            return absl::InternalError(absl::StrCat("tensor ", name, " changed its shape or dtype while being written"));
          }
        }
        if (!saved.mask_sha256.empty()) {
          digests[name] = saved.mask_sha256;
          metadata[digest_prefix + name] = saved.mask_sha256;
        }
        const at::Tensor t = saved.value.to(at::kCPU).contiguous();
        RETURN_IF_ERROR(writer->Append(
            absl::string_view(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size())));
      }
      RETURN_IF_ERROR(report ? writer->FinishWithMetadata(metadata) : writer->Finish());
    }
    return absl::OkStatus();
  }));

  // The index, when the source had one or the model needs more than one shard.
  if ((layout_.has_value() && !layout_->index.is_null()) || (!layout_.has_value() && shards.size() > 1)) {
    nlohmann::json index = layout_.has_value() ? layout_->index : nlohmann::json::object();
    index["metadata"]["total_size"] = total_bytes;
    index["weight_map"] = weight_map;
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n"));
  }

  // Every other file of the source, byte for byte.
  nlohmann::json copied = nlohmann::json::array(), not_copied = nlohmann::json::array();
  bool wrote_config = false;
  if (layout_.has_value()) {
    std::set<std::string> shard_files;
    for (const auto& shard : shards) shard_files.insert(shard.first);
    std::vector<fs::directory_entry> entries;
    for (const auto& entry : fs::directory_iterator(layout_->dir, ec)) entries.push_back(entry);
    if (ec) return absl::InternalError(absl::StrCat("cannot list ", layout_->dir, ": ", ec.message()));
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
    for (const auto& entry : entries) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file()) {
        not_copied.push_back({{"name", name}, {"why", entry.is_directory() ? "a subdirectory" : "not a regular file"}});
        continue;
      }
      std::string why = WhyNotCopied(name, shard_files);
      // A model cast to another dtype: config.json keeps every key, with torch_dtype updated.
      if (name == "config.json" && config_.dtype != layout_->dtype) why = "rewritten: torch_dtype changed";
      if (!why.empty()) {
        if (why != "weights (rewritten)") not_copied.push_back({{"name", name}, {"why", why}});
        continue;
      }
      ASSIGN_OR_RETURN(std::string bytes, ReadTextFile(entry.path().string()));
      RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / name).string(), bytes));
      copied.push_back(name);
      wrote_config = wrote_config || name == "config.json";
    }
  }
  if (!wrote_config) {
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "config.json").string(), config_.HfJsonForSave().dump(2) + "\n"));
  }
  if (!layout_.has_value()) {
    const nlohmann::json generation = {{"bos_token_id", config_.bos_token_id}, {"eos_token_id", config_.eos_token_id}};
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "generation_config.json").string(), generation.dump(2) + "\n"));
  }
  if (!options.tokenizer_path.empty()) {
    // A tokenizer.json takes the files that give it BOS, EOS and the chat template along.
    const bool json = EndsWith(options.tokenizer_path, ".json");
    std::vector<std::pair<fs::path, std::string>> files = {
        {options.tokenizer_path, json ? "tokenizer.json" : "tokenizer.model"}};
    if (json) {
      for (const char* side : {"tokenizer_config.json", "special_tokens_map.json"}) {
        const fs::path beside = fs::path(options.tokenizer_path).parent_path() / side;
        if (fs::exists(beside, ec)) files.emplace_back(beside, side);
      }
    }
    for (const auto& [from, name] : files) {
      if (fs::exists(fs::path(dir) / name, ec)) continue;  // the source directory's own file wins
      ASSIGN_OR_RETURN(std::string bytes, ReadTextFile(from.string()));
      RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / name).string(), bytes));
    }
  }

  if (report) {
    nlohmann::json not_pruned = nlohmann::json::array();
    int64_t biases = 0;
    for (const auto& [name, t] : tensors_) {
      if (digests.contains(name)) continue;
      if (EndsWith(name, ".bias")) ++biases;
      not_pruned.push_back(name);
    }
    nlohmann::json out = options.report.is_object() ? options.report : nlohmann::json::object();
    out["format"] = "fedprllm-pruning-report/1";
    out["settings"] = options.settings;
    out["source"] = source_;
    out["mask_sha256"] = digests;
    out["mask_sha256_definition"] =
        "SHA-256 of the tensor's prune mask: 1 bit per weight, 1 = pruned, row-major, least significant bit first "
        "(docs/mask_wire_format.md)";
    out["pruned_tensors"] = digests.size();
    out["not_pruned"] = not_pruned;
    out["biases"] = absl::StrCat(biases, " bias tensors; biases are never pruned");
    out["files_copied"] = copied;
    out["files_not_copied"] = not_copied;
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "pruning_report.json").string(), out.dump(2) + "\n"));
  }
  return absl::OkStatus();
}

}  // namespace fedprllm
