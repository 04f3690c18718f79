// Seeded ancestral sampling from a LlamaModel, decoding incrementally with a KV cache.
#include "model/generation.h"

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"
#include "common/status_macros.h"
#include "model/torch_wall.h"

namespace fedprllm {

absl::StatusOr<std::string> GenerateText(const LlamaModel& model, const Tokenizer& tokenizer,
                                         const GenerationOptions& options) {
  if (options.streams < 1 || options.tokens_per_stream < 1 ||
      options.tokens_per_stream > model.config().max_position_embeddings || !(options.temperature > 0)) {
    return absl::InvalidArgumentError("generation: streams >= 1, 1 <= tokens <= context, temperature > 0");
  }
  uint64_t state = options.seed;
  const int64_t num_layers = model.config().num_hidden_layers;
  std::vector<DecoderLayerWeights> layers;
  for (int64_t l = 0; l < num_layers; ++l) {
    ASSIGN_OR_RETURN(DecoderLayerWeights weights, model.Layer(l, options.compute));
    layers.push_back(std::move(weights));
  }
  // Incremental decoding: each step feeds only the newest token and reuses every layer's
  // cached keys and values.
  std::vector<LayerKvCache> caches(num_layers);
  std::vector<std::vector<int64_t>> ids(options.streams, std::vector<int64_t>{model.config().bos_token_id});
  std::vector<int64_t> newest(options.streams, model.config().bos_token_id);
  for (int64_t step = 0; step < options.tokens_per_stream; ++step) {
    ASSIGN_OR_RETURN(at::Tensor hidden, model.Embed(at::tensor(newest, at::kLong).reshape({options.streams, 1}),
                                                    options.compute));
    for (int64_t l = 0; l < num_layers; ++l) {
      ASSIGN_OR_RETURN(hidden, model.DecoderLayerStep(layers[l], hidden, &caches[l]));
    }
    ASSIGN_OR_RETURN(at::Tensor logits, model.Logits(hidden, options.compute));
    ASSIGN_OR_RETURN(at::Tensor probs, TorchCall("sampling", [&] {
      return at::softmax(logits.select(1, 0).to(at::kDouble) / options.temperature, -1).cpu().contiguous();
    }));
    const int64_t vocab = probs.size(1);
    for (int64_t s = 0; s < options.streams; ++s) {
      const double* p = probs.data_ptr<double>() + s * vocab;
      double u = static_cast<double>(SplitMix64(&state) >> 11) * 0x1.0p-53;
      int64_t token = vocab - 1;
      for (int64_t v = 0; v < vocab; ++v) {
        if ((u -= p[v]) < 0) { token = v; break; }
      }
      ids[s].push_back(token);
      newest[s] = token;
    }
  }
  std::string text;
  for (const auto& stream : ids) {
    std::vector<int> story;
    // Stop a stream at its first EOS or BOS after the start: the rest is a new story.
    for (size_t i = 1; i < stream.size(); ++i) {
      if (stream[i] == model.config().eos_token_id || stream[i] == model.config().bos_token_id) break;
      story.push_back(static_cast<int>(stream[i]));
    }
    ASSIGN_OR_RETURN(std::string decoded, tokenizer.Decode(story));
    if (decoded.empty()) continue;
    absl::StrAppend(&text, text.empty() ? "" : "\n\n", decoded);
  }
  return text;
}

}  // namespace fedprllm
