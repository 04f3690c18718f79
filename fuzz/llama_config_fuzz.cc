// Fuzz target: Hugging Face config.json parsing (model/llama_config.h, LlamaConfig::FromHfJson).
// The input is the file's bytes; JSON that nlohmann rejects ends the run there (as
// LlamaModel::Load does). An accepted config must validate and survive the calls a model
// load makes next: sequence limits, tensor list, and writing config.json back.
#include <cstdint>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_support.h"
#include "model/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm;
  const nlohmann::json json = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    fuzz::Report("json", absl::InvalidArgumentError("not JSON"));
    return 0;
  }
  absl::StatusOr<LlamaConfig> config = LlamaConfig::FromHfJson(json);
  fuzz::Report("FromHfJson", config.status());
  if (!config.ok()) return 0;
  if (!config->Validate().ok()) __builtin_trap();  // FromHfJson promises a valid config
  (void)config->max_sequence_length();
  (void)config->CheckSequenceLength(4096);
  (void)config->linear_has_bias();
  (void)config->q_dim();
  (void)config->kv_dim();
  // ArchitectureTensors lists every layer's tensors; configs of real models have at most a
  // few hundred layers, and the harness skips bigger ones to keep each input cheap.
  if (config->num_hidden_layers <= 256) (void)ArchitectureTensors(*config);
  const nlohmann::json back = config->ToHfJson();
  absl::StatusOr<LlamaConfig> reread = LlamaConfig::FromHfJson(back);
  if (!reread.ok()) __builtin_trap();  // what we write we must read
  (void)config->HfJsonForSave().dump();
  return 0;
}
