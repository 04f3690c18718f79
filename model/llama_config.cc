// LlamaConfig parsing (with the table of config.json keys and what each does), validation,
// serialization and the architecture's tensor list.
#include "model/llama_config.h"

#include <algorithm>
#include <cstdint>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedprllm {
namespace {

// Keys read into LlamaConfig (they shape the forward pass and are followed exactly).
const std::set<std::string>& UnderstoodKeys() {
  static const std::set<std::string> keys = {
      "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
      "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings", "rope_theta",
      "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id", "head_dim", "attention_bias",
      "mlp_bias", "rope_scaling", "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",
      "torch_dtype", "hidden_act"};
  return keys;
}

// Keys that do not change an inference forward pass: PretrainedConfig bookkeeping,
// generation defaults, training-only settings (dropout, initialisation, tensor-parallel
// slicing that computes the same sums) and attention kernels.
const std::set<std::string>& NeutralKeys() {
  static const std::set<std::string> keys = {
      "_name_or_path", "transformers_version", "pad_token_id", "sep_token_id", "decoder_start_token_id",
      "initializer_range", "use_cache", "attention_dropout", "hidden_dropout", "pretraining_tp",
      "_attn_implementation", "attn_implementation", "_attn_implementation_autoset", "use_flash_attention_2",
      "output_attentions", "output_hidden_states", "return_dict", "torchscript", "use_bfloat16",
      "tf_legacy_loss", "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
      "add_cross_attention", "tie_encoder_decoder", "cross_attention_hidden_size", "finetuning_task",
      "id2label", "label2id", "num_labels", "problem_type", "task_specific_params", "tokenizer_class",
      "prefix", "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
      "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
      "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
      "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
      "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
      "suppress_tokens", "begin_suppress_tokens", "model_max_length"};
  return keys;
}

absl::Status Refused(absl::string_view key, absl::string_view why) {
  return absl::UnimplementedError(absl::StrCat("config.json: ", key, ": ", why));
}

bool IsSet(const nlohmann::json& json, const char* key) {
  return json.contains(key) && !json.at(key).is_null();
}

// OK unless json[key] is set and is not a JSON integer in the int64 range. get<int64_t>()
// would convert 8.5 to 8 and 1e30 by a float-to-integer cast that is undefined out of range,
// so every integer key is checked with this before it is read. `name` labels the error.
absl::Status CheckInt64Key(const nlohmann::json& json, const char* key, absl::string_view name) {
  if (!IsSet(json, key)) return absl::OkStatus();
  const nlohmann::json& v = json.at(key);
  const bool fits = v.is_number_integer() &&
                    !(v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX));
  if (fits) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: ", name, " must be an integer in the int64 range, got ", v.dump()));
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const nlohmann::json& value, int64_t max_position_embeddings) {
  RopeScaling scaling;
  if (value.is_null()) return scaling;
  if (!value.is_object()) return absl::InvalidArgumentError("config.json: rope_scaling must be an object or null");
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    if (value.contains(key) && value.at(key).is_string()) {
      if (!type.empty() && type != value.at(key).get<std::string>()) {
        return absl::InvalidArgumentError("config.json: rope_scaling.type and rope_scaling.rope_type disagree");
      }
      type = value.at(key).get<std::string>();
    }
  }
  std::set<std::string> allowed = {"rope_type", "type"};
  if (type.empty() || type == "default") {
    scaling.type = RopeScaling::Type::kNone;
  } else if (type == "linear") {
    scaling.type = RopeScaling::Type::kLinear;
    allowed.insert("factor");
  } else if (type == "dynamic") {
    scaling.type = RopeScaling::Type::kDynamic;
    allowed.insert({"factor", "original_max_position_embeddings"});
  } else if (type == "llama3") {
    scaling.type = RopeScaling::Type::kLlama3;
    allowed.insert({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
  } else {
    return Refused("rope_scaling", absl::StrCat("type \"", type,
                                                "\" is not supported (linear, dynamic and llama3 are)"));
  }
  for (const auto& [key, v] : value.items()) {
    if (allowed.count(key) == 0 && !(key == "attention_factor" && v.is_number() && v.get<double>() == 1.0)) {
      return Refused(absl::StrCat("rope_scaling.", key),
                     absl::StrCat("not supported with rope_scaling type \"", type.empty() ? "default" : type, "\""));
    }
  }
  if (scaling.type == RopeScaling::Type::kNone) return scaling;
  if (auto s = CheckInt64Key(value, "original_max_position_embeddings", "rope_scaling.original_max_position_embeddings");
      !s.ok()) {
    return s;
  }
  if (!value.contains("factor") || !value.at("factor").is_number() || !(value.at("factor").get<double>() >= 1.0)) {
    return absl::InvalidArgumentError("config.json: rope_scaling.factor must be a number >= 1");
  }
  scaling.factor = value.at("factor").get<double>();
  scaling.low_freq_factor = value.value("low_freq_factor", scaling.low_freq_factor);
  scaling.high_freq_factor = value.value("high_freq_factor", scaling.high_freq_factor);
  scaling.original_max_position_embeddings =
      value.value("original_max_position_embeddings", scaling.type == RopeScaling::Type::kDynamic
                                                          ? max_position_embeddings
                                                          : int64_t{0});
  if (scaling.type == RopeScaling::Type::kLlama3) {
    if (scaling.original_max_position_embeddings <= 0) {
      return absl::InvalidArgumentError(
          "config.json: rope_scaling type llama3 needs original_max_position_embeddings > 0");
    }
    if (!(scaling.low_freq_factor > 0) || !(scaling.high_freq_factor > scaling.low_freq_factor)) {
      return absl::InvalidArgumentError(
          "config.json: rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor");
    }
  }
  return scaling;
}

}  // namespace

std::string LayerTensorName(int64_t layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix, ".weight");
}

std::string LayerBiasName(int64_t layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix, ".bias");
}

std::string RopeScalingName(RopeScaling::Type type) {
  switch (type) {
    case RopeScaling::Type::kLinear: return "linear";
    case RopeScaling::Type::kDynamic: return "dynamic";
    case RopeScaling::Type::kLlama3: return "llama3";
    default: return "none";
  }
}

std::array<bool, kNumLinears> LlamaConfig::linear_has_bias() const {
  std::array<bool, kNumLinears> bias{};
  const bool qwen2 = architecture == "Qwen2ForCausalLM";
  for (int i = 0; i < 3; ++i) bias[i] = attention_bias || qwen2;
  bias[3] = attention_bias && !qwen2;
  for (int i = 4; i < kNumLinears; ++i) bias[i] = mlp_bias;
  return bias;
}

int64_t LlamaConfig::max_sequence_length() const {
  int64_t limit = max_position_embeddings;
  if (rope_scaling.type == RopeScaling::Type::kDynamic) {
    limit = static_cast<int64_t>(static_cast<double>(rope_scaling.original_max_position_embeddings) *
                                 rope_scaling.factor);
    limit = std::max(limit, max_position_embeddings);
  }
  if (sliding_window.has_value()) limit = std::min(limit, *sliding_window);
  return limit;
}

absl::Status LlamaConfig::CheckSequenceLength(int64_t tokens) const {
  if (tokens <= max_sequence_length()) return absl::OkStatus();
  if (sliding_window.has_value() && tokens > *sliding_window) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a sequence of ", tokens, " tokens is longer than the model's sliding_window ", *sliding_window,
        " (sequences past the attention window are not supported); use seqlen <= ", *sliding_window));
  }
  if (rope_scaling.type == RopeScaling::Type::kDynamic) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a sequence of ", tokens, " tokens is longer than ", max_sequence_length(),
        " (original_max_position_embeddings × rope_scaling.factor of dynamic RoPE scaling)"));
  }
  return absl::InvalidArgumentError(absl::StrCat("a sequence of ", tokens,
                                                 " tokens is longer than the model's max_position_embeddings ",
                                                 max_position_embeddings, "; use seqlen <= ", max_position_embeddings));
}

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
  if (explicit_head_dim < 0) return absl::InvalidArgumentError("config: head_dim must be > 0");
  if (explicit_head_dim == 0 && hidden_size % num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: hidden_size ", hidden_size,
        " is not divisible by num_attention_heads ", num_attention_heads, " (and no head_dim is given)"));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: num_attention_heads ", num_attention_heads,
        " is not divisible by num_key_value_heads ", num_key_value_heads));
  }
  if (head_dim() % 2 != 0) return absl::InvalidArgumentError("config: head_dim must be even for RoPE");
  if (!(rms_norm_eps > 0) || !(rope_theta > 0)) {
    return absl::InvalidArgumentError("config: rms_norm_eps and rope_theta must be > 0");
  }
  if (sliding_window.has_value() && *sliding_window <= 0) {
    return absl::InvalidArgumentError("config: sliding_window must be > 0 or null");
  }
  return absl::OkStatus();
}

absl::StatusOr<LlamaConfig> LlamaConfig::FromHfJson(const nlohmann::json& json) {
  if (!json.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  LlamaConfig c;
  c.source_json = json;
  try {
    for (const auto& [key, value] : json.items()) {
      if (UnderstoodKeys().count(key) == 0 && NeutralKeys().count(key) == 0) {
        return Refused(key, "unknown key; it may change the forward pass, so the model is refused "
                            "(docs/models.md lists the keys FedPrLLM follows)");
      }
    }
    if (json.contains("architectures")) {
      const auto& archs = json.at("architectures");
      if (!archs.is_array() || archs.size() != 1 || !archs[0].is_string()) {
        return absl::InvalidArgumentError("config.json: architectures must be a list of one class name");
      }
      c.architecture = archs[0].get<std::string>();
    }
    static const std::vector<std::pair<std::string, std::string>> kKnown = {
        {"LlamaForCausalLM", "llama"}, {"MistralForCausalLM", "mistral"}, {"Qwen2ForCausalLM", "qwen2"}};
    auto known = std::find_if(kKnown.begin(), kKnown.end(), [&](const auto& k) { return k.first == c.architecture; });
    if (known == kKnown.end()) {
      return Refused("architectures", absl::StrCat(c.architecture,
          " is not supported (LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM are)"));
    }
    if (json.contains("model_type") && json.at("model_type") != known->second) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: model_type ", json.at("model_type").dump(),
                                                     " does not match ", c.architecture, " (\"", known->second, "\")"));
    }
    if (json.contains("hidden_act") && json.at("hidden_act") != "silu") {
      return Refused("hidden_act", absl::StrCat(json.at("hidden_act").dump(), " is not supported (silu is)"));
    }
    for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                            "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim",
                            "sliding_window"}) {
      if (auto s = CheckInt64Key(json, key, key); !s.ok()) return s;
    }
    c.hidden_size = json.at("hidden_size").get<int64_t>();
    c.intermediate_size = json.at("intermediate_size").get<int64_t>();
    c.num_hidden_layers = json.at("num_hidden_layers").get<int64_t>();
    c.num_attention_heads = json.at("num_attention_heads").get<int64_t>();
    c.num_key_value_heads = IsSet(json, "num_key_value_heads") ? json.at("num_key_value_heads").get<int64_t>()
                                                               : c.num_attention_heads;
    c.vocab_size = json.at("vocab_size").get<int64_t>();
    c.max_position_embeddings = json.value("max_position_embeddings", int64_t{2048});
    c.rope_theta = json.value("rope_theta", 10000.0);
    c.rms_norm_eps = json.value("rms_norm_eps", 1e-6);
    // transformers' LlamaConfig, MistralConfig and Qwen2Config all default to untied.
    c.tie_word_embeddings = json.value("tie_word_embeddings", false);
    if (IsSet(json, "bos_token_id") && json.at("bos_token_id").is_number_integer()) {
      c.bos_token_id = json.at("bos_token_id").get<int64_t>();
    }
    if (IsSet(json, "eos_token_id")) {
      const auto& eos = json.at("eos_token_id");
      if (eos.is_number_integer()) c.eos_token_id = eos.get<int64_t>();
      if (eos.is_array() && !eos.empty() && eos[0].is_number_integer()) c.eos_token_id = eos[0].get<int64_t>();
    }
    if (IsSet(json, "head_dim")) c.explicit_head_dim = json.at("head_dim").get<int64_t>();
    c.attention_bias = json.value("attention_bias", false);
    c.mlp_bias = json.value("mlp_bias", false);
    if (c.architecture == "MistralForCausalLM" && (c.attention_bias || c.mlp_bias)) {
      return Refused(c.attention_bias ? "attention_bias" : "mlp_bias", "MistralForCausalLM has no biases");
    }
    if (c.architecture == "Qwen2ForCausalLM" && (json.contains("attention_bias") || json.contains("mlp_bias"))) {
      return Refused(json.contains("attention_bias") ? "attention_bias" : "mlp_bias",
                     "Qwen2ForCausalLM has fixed biases (q, k and v) and does not read this key");
    }
    if (json.contains("rope_scaling")) {
      auto scaling = ParseRopeScaling(json.at("rope_scaling"), c.max_position_embeddings);
      if (!scaling.ok()) return scaling.status();
      c.rope_scaling = *scaling;
    }
    // The attention window: Mistral reads sliding_window (null for none); Qwen2 only when
    // use_sliding_window, and then for layers >= max_window_layers (taken as all layers,
    // which refuses the same sequences). A LLaMA config has no window.
    const bool qwen2 = c.architecture == "Qwen2ForCausalLM";
    bool windowed = c.architecture == "MistralForCausalLM" || (qwen2 && json.value("use_sliding_window", false));
    if (json.contains("layer_types") && json.at("layer_types").is_array()) {
      for (const auto& type : json.at("layer_types")) {
        if (type == "sliding_attention") windowed = true;
        else if (type != "full_attention") return Refused("layer_types", absl::StrCat(type.dump(), " is not supported"));
      }
    }
    if (c.architecture == "LlamaForCausalLM" && IsSet(json, "sliding_window")) {
      return Refused("sliding_window", "LlamaForCausalLM has no attention window");
    }
    if (windowed && IsSet(json, "sliding_window")) c.sliding_window = json.at("sliding_window").get<int64_t>();
    if (json.contains("torch_dtype") && !json.at("torch_dtype").is_null()) {
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
  const bool mistral = architecture == "MistralForCausalLM", qwen2 = architecture == "Qwen2ForCausalLM";
  nlohmann::json json = {
      {"architectures", {architecture}},
      {"model_type", mistral ? "mistral" : qwen2 ? "qwen2" : "llama"},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim()},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings},
      {"rope_theta", rope_theta},
      {"rms_norm_eps", rms_norm_eps},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"hidden_act", "silu"},
      {"torch_dtype", TorchDtypeName(dtype)},
  };
  if (!qwen2) json["attention_bias"] = attention_bias;
  if (!mistral && !qwen2) json["mlp_bias"] = mlp_bias;
  if (rope_scaling.type == RopeScaling::Type::kNone) {
    json["rope_scaling"] = nullptr;
  } else {
    nlohmann::json scaling = {{"rope_type", RopeScalingName(rope_scaling.type)}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == RopeScaling::Type::kLlama3) {
      scaling["low_freq_factor"] = rope_scaling.low_freq_factor;
      scaling["high_freq_factor"] = rope_scaling.high_freq_factor;
    }
    if (rope_scaling.type != RopeScaling::Type::kLinear) {
      scaling["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    json["rope_scaling"] = scaling;
  }
  if (mistral) json["sliding_window"] = sliding_window.has_value() ? nlohmann::json(*sliding_window) : nlohmann::json();
  if (qwen2) {
    json["use_sliding_window"] = sliding_window.has_value();
    if (sliding_window.has_value()) json["sliding_window"] = *sliding_window;
  }
  return json;
}

nlohmann::json LlamaConfig::HfJsonForSave() const {
  if (source_json.is_null()) return ToHfJson();
  nlohmann::json json = source_json;
  json["torch_dtype"] = TorchDtypeName(dtype);
  return json;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ArchitectureTensors(const LlamaConfig& c) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  const std::array<std::vector<int64_t>, kNumLinears> shapes = {
      std::vector<int64_t>{q, h}, {kv, h}, {kv, h}, {h, q}, {i, h}, {i, h}, {h, i}};
  const std::array<bool, kNumLinears> bias = c.linear_has_bias();
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    out.push_back({LayerTensorName(layer, "input_layernorm"), {h}});
    for (int k = 0; k < kNumLinears; ++k) {
      out.push_back({LayerTensorName(layer, kLinearNames[k]), shapes[k]});
      if (bias[k]) out.push_back({LayerBiasName(layer, kLinearNames[k]), {shapes[k][0]}});
      if (k == 3) out.push_back({LayerTensorName(layer, "post_attention_layernorm"), {h}});
    }
  }
  out.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
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
