// Loader for llama2.c legacy ("version 0") checkpoints: a 7 x int32 header followed by
// float32 arrays (layout in docs/model_formats.md), mapped to Hugging Face names.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/llama_model.h"
#include "model/mapped_file.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace {

// Rows of a q or k matrix reordered from interleaved RoPE pairs to rotate-half order:
// hf_row[h*d + t*d/2 + j] = l2c_row[h*d + 2j + t] (llama2.c export.py permute_original).
at::Tensor PermuteForRotateHalf(const at::Tensor& w, int64_t heads, int64_t head_dim) {
  return w.view({heads, head_dim / 2, 2, w.size(1)}).transpose(1, 2).reshape({w.size(0), w.size(1)}).contiguous();
}

}  // namespace

absl::StatusOr<LlamaModel> LoadLlama2c(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  constexpr uint64_t kHeaderBytes = 7 * sizeof(int32_t);
  if (file->size() < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, ": ", file->size(), " bytes, shorter than the 28-byte llama2.c header"));
  }
  int32_t h[7];
  std::memcpy(h, file->data(), kHeaderBytes);
  const bool shared_classifier = h[5] > 0;
  LlamaConfig c;
  c.hidden_size = h[0];
  c.intermediate_size = h[1];
  c.num_hidden_layers = h[2];
  c.num_attention_heads = h[3];
  c.num_key_value_heads = h[4];
  c.vocab_size = h[5] > 0 ? h[5] : -int64_t{h[5]};
  c.max_position_embeddings = h[6];
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = shared_classifier;
  c.dtype = at::kFloat;
  if (auto s = c.Validate(); !s.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": llama2.c header (", h[0], ", ", h[1], ", ", h[2], ", ", h[3], ", ",
                                            h[4], ", ", h[5], ", ", h[6], ") is invalid: ", s.message()));
  }
  const int64_t dim = c.hidden_size, hidden = c.intermediate_size, layers = c.num_hidden_layers;
  const int64_t kv_dim = c.kv_dim(), vocab = c.vocab_size, head_dim = c.head_dim();
  struct Block {
    const char* name;
    std::vector<int64_t> shape;
  };
  const std::vector<Block> blocks = {
      {"token_embedding_table", {vocab, dim}},     {"rms_att_weight", {layers, dim}},
      {"wq", {layers, dim, dim}},                  {"wk", {layers, kv_dim, dim}},
      {"wv", {layers, kv_dim, dim}},               {"wo", {layers, dim, dim}},
      {"rms_ffn_weight", {layers, dim}},           {"w1", {layers, hidden, dim}},
      {"w2", {layers, dim, hidden}},               {"w3", {layers, hidden, dim}},
      {"rms_final_weight", {dim}},                 {"freq_cis_real", {c.max_position_embeddings, head_dim / 2}},
      {"freq_cis_imag", {c.max_position_embeddings, head_dim / 2}}, {"wcls", {shared_classifier ? 0 : vocab, dim}}};
  std::map<std::string, at::Tensor> raw;
  uint64_t offset = kHeaderBytes;
  for (const Block& b : blocks) {
    uint64_t numel = 1;
    for (int64_t d : b.shape) numel *= static_cast<uint64_t>(d);
    const uint64_t bytes = numel * sizeof(float);
    if (offset + bytes > file->size()) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", b.name, " needs bytes [", offset, ", ", offset + bytes,
                                              ") but the file has ", file->size(), " bytes: truncated or wrong header"));
    }
    ASSIGN_OR_RETURN(raw[b.name], TorchCall(absl::StrCat("viewing ", b.name, " in ", path), [&] {
      return at::from_blob(file->data() + offset, b.shape, [file](void*) {}, at::TensorOptions().dtype(at::kFloat));
    }));
    offset += bytes;
  }
  if (offset != file->size()) {
    return absl::DataLossError(absl::StrCat(path, ": ", file->size() - offset,
                                            " trailing bytes after the last tensor: header does not match the file"));
  }
  TensorMap tensors;
  RETURN_IF_ERROR(TorchCall(absl::StrCat("mapping ", path, " to Hugging Face names"), [&] {
    tensors["model.embed_tokens.weight"] = raw["token_embedding_table"];
    tensors["model.norm.weight"] = raw["rms_final_weight"];
    if (!shared_classifier) tensors["lm_head.weight"] = raw["wcls"];
    for (int64_t l = 0; l < layers; ++l) {
      tensors[LayerTensorName(l, "input_layernorm")] = raw["rms_att_weight"][l];
      tensors[LayerTensorName(l, "post_attention_layernorm")] = raw["rms_ffn_weight"][l];
      tensors[LayerTensorName(l, "self_attn.q_proj")] =
          PermuteForRotateHalf(raw["wq"][l], c.num_attention_heads, head_dim);
      tensors[LayerTensorName(l, "self_attn.k_proj")] =
          PermuteForRotateHalf(raw["wk"][l], c.num_key_value_heads, head_dim);
      tensors[LayerTensorName(l, "self_attn.v_proj")] = raw["wv"][l];
      tensors[LayerTensorName(l, "self_attn.o_proj")] = raw["wo"][l];
      tensors[LayerTensorName(l, "mlp.gate_proj")] = raw["w1"][l];
      tensors[LayerTensorName(l, "mlp.down_proj")] = raw["w2"][l];
      tensors[LayerTensorName(l, "mlp.up_proj")] = raw["w3"][l];
    }
  }));
  return LlamaModel::FromTensors(std::move(c), std::move(tensors), path);
}

}  // namespace fedprllm
