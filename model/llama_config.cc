// LlamaConfig parsing, validation and serialization.
#include "model/llama_config.h"

#include "absl/strings/str_cat.h"

namespace fedprllm {

absl::Status LlamaConfig::Validate() const {
  auto positive = [](const char* name, int64_t v) -> absl::Status {
    if (v <= 0) return absl::InvalidArgumentError(absl::StrCat("config: ", name, " must be > 0, got ", v));
    return absl::OkStatus();
  };
  for (auto [name, value] : {std::pair{"hidden_size", hidden_size},
                             {"intermediate_size", intermediate_size},
                             {"num_hidden_layers", num_hidden_layers},
                             {"num_attention_heads", num_attention_heads},
                             {"num_key_value_heads", num_key_value_heads},
                             {"vocab_size", vocab_size},
                             {"max_position_embeddings", max_position_embeddings}}) {
    if (auto s = positive(name, value); !s.ok()) return s;
  }
  if (hidden_size % num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: hidden_size ", hidden_size,
        " is not divisible by num_attention_heads ", num_attention_heads));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: num_attention_heads ", num_attention_heads,
        " is not divisible by num_key_value_heads ", num_key_value_heads));
  }
  if (head_dim() % 2 != 0) return absl::InvalidArgumentError("config: head_dim must be even for RoPE");
  if (!(rms_norm_eps > 0) || !(rope_theta > 0)) {
    return absl::InvalidArgumentError("config: rms_norm_eps and rope_theta must be > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<LlamaConfig> LlamaConfig::FromHfJson(const nlohmann::json& json) {
  if (!json.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  LlamaConfig c;
  try {
    if (json.contains("architectures")) {
      const auto& archs = json.at("architectures");
      if (!archs.is_array() || archs.empty()) {
        return absl::InvalidArgumentError("config.json: architectures must be a non-empty list");
      }
      c.architecture = archs[0].get<std::string>();
      if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM") {
        return absl::UnimplementedError(absl::StrCat("config.json: architecture ", c.architecture,
            " is not supported (LlamaForCausalLM and MistralForCausalLM are)"));
      }
    }
    if (json.contains("rope_scaling") && !json.at("rope_scaling").is_null()) {
      return absl::UnimplementedError("config.json: rope_scaling is not supported yet");
    }
    c.hidden_size = json.at("hidden_size").get<int64_t>();
    c.intermediate_size = json.at("intermediate_size").get<int64_t>();
    c.num_hidden_layers = json.at("num_hidden_layers").get<int64_t>();
    c.num_attention_heads = json.at("num_attention_heads").get<int64_t>();
    c.num_key_value_heads = json.value("num_key_value_heads", c.num_attention_heads);
    c.vocab_size = json.at("vocab_size").get<int64_t>();
    c.max_position_embeddings = json.value("max_position_embeddings", int64_t{2048});
    c.rope_theta = json.value("rope_theta", 10000.0);
    c.rms_norm_eps = json.value("rms_norm_eps", 1e-6);
    c.tie_word_embeddings = json.value("tie_word_embeddings", false);
    if (json.contains("bos_token_id") && json.at("bos_token_id").is_number_integer()) {
      c.bos_token_id = json.at("bos_token_id").get<int64_t>();
    }
    if (json.contains("eos_token_id") && json.at("eos_token_id").is_number_integer()) {
      c.eos_token_id = json.at("eos_token_id").get<int64_t>();
    }
    if (json.contains("head_dim") && json.at("head_dim").is_number_integer() &&
        json.at("head_dim").get<int64_t>() != c.hidden_size / std::max<int64_t>(1, c.num_attention_heads)) {
      return absl::UnimplementedError("config.json: head_dim other than hidden_size / heads is not supported");
    }
    if (json.contains("torch_dtype")) {
      auto dtype = DtypeFromTorchName(json.at("torch_dtype").get<std::string>());
      if (!dtype.ok()) return dtype.status();
      c.dtype = *dtype;
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", e.what()));
  }
  if (auto s = c.Validate(); !s.ok()) return s;
  return c;
}

nlohmann::json LlamaConfig::ToHfJson() const {
  return nlohmann::json{
      {"architectures", {architecture}},
      {"model_type", architecture == "MistralForCausalLM" ? "mistral" : "llama"},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings},
      {"rope_theta", rope_theta},
      {"rms_norm_eps", rms_norm_eps},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"rope_scaling", nullptr},
      {"torch_dtype", TorchDtypeName(dtype)},
  };
}

absl::StatusOr<at::ScalarType> DtypeFromSafetensorsName(absl::string_view name) {
  if (name == "F32") return at::kFloat;
  if (name == "F16") return at::kHalf;
  if (name == "BF16") return at::kBFloat16;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", name, "\" (F32, F16 and BF16 are)"));
}

std::string SafetensorsDtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    default: return "F32";
  }
}

absl::StatusOr<at::ScalarType> DtypeFromTorchName(absl::string_view name) {
  if (name == "float32" || name == "fp32" || name == "float") return at::kFloat;
  if (name == "float16" || name == "fp16" || name == "half") return at::kHalf;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", name, "\" (float32, float16 and bfloat16 are)"));
}

std::string TorchDtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    default: return "float32";
  }
}

}  // namespace fedprllm
