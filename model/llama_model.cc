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
#include "common/status_macros.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace fs = std::filesystem;

std::string LayerTensorName(int64_t layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix, ".weight");
}

namespace {

// Every tensor the architecture needs, with its expected shape.
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(const LlamaConfig& c) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, q = c.num_attention_heads * c.head_dim();
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {
      {"model.embed_tokens.weight", {c.vocab_size, h}}, {"model.norm.weight", {h}}};
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  const std::array<std::vector<int64_t>, kNumLinears> linear_shapes = {
      std::vector<int64_t>{q, h}, {c.kv_dim(), h}, {c.kv_dim(), h}, {h, q}, {i, h}, {i, h}, {h, i}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    out.push_back({LayerTensorName(l, "input_layernorm"), {h}});
    out.push_back({LayerTensorName(l, "post_attention_layernorm"), {h}});
    for (int k = 0; k < kNumLinears; ++k) out.push_back({LayerTensorName(l, kLinearNames[k]), linear_shapes[k]});
  }
  return out;
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::DataLossError(absl::StrCat(path, ": not valid JSON"));
  return json;
}

absl::StatusOr<LlamaModel> LoadHfDirectory(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  ASSIGN_OR_RETURN(nlohmann::json config_json, ReadJsonFile(config_path));
  auto config = LlamaConfig::FromHfJson(config_json);
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(config_path, ": ", config.status().message()));
  std::vector<std::string> files;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    files.push_back(single.string());
  } else if (fs::exists(index)) {
    ASSIGN_OR_RETURN(nlohmann::json index_json, ReadJsonFile(index.string()));
    if (!index_json.contains("weight_map") || !index_json["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": no weight_map object"));
    }
    std::set<std::string> shards;
    for (const auto& [name, file] : index_json["weight_map"].items()) {
      if (!file.is_string()) return absl::DataLossError(absl::StrCat(index.string(), ": weight_map[", name, "] is not a file name"));
      const std::string shard = file.get<std::string>();
      if (shard.find('/') != std::string::npos) return absl::DataLossError(absl::StrCat(index.string(), ": shard name ", shard, " has a path"));
      shards.insert(shard);
    }
    for (const auto& shard : shards) files.push_back((fs::path(dir) / shard).string());
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": neither model.safetensors nor model.safetensors.index.json"));
  }
  TensorMap tensors;
  for (const auto& file : files) {
    ASSIGN_OR_RETURN(TensorMap part, ReadSafetensors(file));
    for (auto& [name, t] : part) {
      if (!tensors.emplace(name, std::move(t)).second) {
        return absl::DataLossError(absl::StrCat(file, ": tensor ", name, " appears in two shards"));
      }
    }
  }
  if (config->tie_word_embeddings) tensors.erase("lm_head.weight");
  if (auto it = tensors.find("model.embed_tokens.weight"); it != tensors.end()) {
    config->dtype = it->second.scalar_type();
  }
  return LlamaModel::FromTensors(*std::move(config), std::move(tensors), dir);
}

}  // namespace

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
  for (const auto& [name, shape] : ExpectedTensors(config)) {
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
  return LlamaModel(std::move(config), std::move(tensors), source_);
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
    for (int k = 0; k < kNumLinears; ++k) w.linears[k] = get(kLinearNames[k]);
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
    auto linear = [&](int index, const at::Tensor& input) {
      if (observer != nullptr && *observer) (*observer)(index, input);
      return at::matmul(input, w.linears[index].t());
    };
    // Attention block. Query head h reads key/value head h / group (HF's repeat_kv), so the
    // queries of one key/value head are stacked into a single [group * seq, head_dim] batch
    // entry: one baddbmm applies the scale and the causal mask, with no copies of k and v.
    const int64_t group = heads / kv_heads;
    const at::Tensor x = RmsNorm(hidden, w.input_layernorm, config_.rms_norm_eps);
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(hidden.device());
    const at::Tensor inv_freq =
        1.0 / at::pow(config_.rope_theta, at::arange(0, head_dim, 2, f32) / static_cast<double>(head_dim));
    const at::Tensor freqs = at::outer(at::arange(past, past + seq, f32), inv_freq);
    const at::Tensor angles = at::cat({freqs, freqs}, -1).view({seq, 1, head_dim});  // [seq, 1, dim]
    const at::Tensor cos = angles.cos().to(hidden.scalar_type()), sin = angles.sin().to(hidden.scalar_type());
    const at::Tensor q = RopeRotate(linear(0, x).view({batch, seq, heads, head_dim}), cos, sin)
                             .view({batch, seq, kv_heads, group, head_dim})
                             .permute({0, 2, 3, 1, 4})
                             .reshape({batch * kv_heads, group * seq, head_dim});
    at::Tensor k = RopeRotate(linear(1, x).view({batch, seq, kv_heads, head_dim}), cos, sin)
                       .transpose(1, 2)
                       .reshape({batch * kv_heads, seq, head_dim});
    at::Tensor v = linear(2, x).view({batch, seq, kv_heads, head_dim}).transpose(1, 2).reshape(
        {batch * kv_heads, seq, head_dim});
    if (cache != nullptr) {
      if (past > 0) {
        k = at::cat({cache->keys, k}, 1);
        v = at::cat({cache->values, v}, 1);
      }
      cache->keys = k;
      cache->values = v;
    }
    // Query i (position past + i) sees keys 0 .. past + i.
    const at::Tensor causal_mask = at::full({seq, past + seq}, -std::numeric_limits<float>::infinity(),
                                            f32.dtype(hidden.scalar_type()))
                                       .triu_(past + 1)
                                       .repeat({group, 1});  // [group * seq, past + seq]
    const at::Tensor scores = at::baddbmm(causal_mask, q, k.transpose(1, 2), /*beta=*/1.0,
                                          /*alpha=*/1.0 / std::sqrt(static_cast<double>(head_dim)));
    const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(hidden.scalar_type());
    const at::Tensor attn = at::bmm(probs, v)
                                .view({batch, kv_heads, group, seq, head_dim})
                                .permute({0, 3, 1, 2, 4})
                                .reshape({batch, seq, heads * head_dim});
    const at::Tensor after_attn = hidden + linear(3, attn);
    // MLP block.
    const at::Tensor y = RmsNorm(after_attn, w.post_attention_layernorm, config_.rms_norm_eps);
    const at::Tensor act = at::silu(linear(4, y)) * linear(5, y);
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

absl::Status LlamaModel::SaveHf(const std::string& dir, const std::string& tokenizer_path,
                                const TensorTransform& transform) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / "model.safetensors").string(), tensors_, transform));
  RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "config.json").string(), config_.ToHfJson().dump(2) + "\n"));
  const nlohmann::json generation = {{"bos_token_id", config_.bos_token_id}, {"eos_token_id", config_.eos_token_id}};
  RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "generation_config.json").string(), generation.dump(2) + "\n"));
  if (!tokenizer_path.empty()) {
    std::ifstream in(tokenizer_path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read tokenizer ", tokenizer_path));
    std::stringstream buffer;
    buffer << in.rdbuf();
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "tokenizer.model").string(), buffer.str()));
  }
  return absl::OkStatus();
}

}  // namespace fedprllm
