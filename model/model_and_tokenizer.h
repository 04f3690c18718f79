// Loading a model together with its tokenizer, as every tool, daemon and the simulator do.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace fedprllm {

struct ModelAndTokenizer {
  LlamaModel model;
  Tokenizer tokenizer;
};

// Loads the model (Hugging Face directory or llama2.c .bin), sizes the thread pools for it
// (FitThreadsToModel, model/cpu_runtime.h), and loads its tokenizer (a tokenizer.json or a SentencePiece
// model; model/tokenizer.h): `tokenizer_path` when given, else the one found beside the model
// (FindTokenizer: tokenizer.json before tokenizer.model in a Hugging Face directory).
absl::StatusOr<ModelAndTokenizer> LoadModelAndTokenizer(const std::string& model_path,
                                                        const std::string& tokenizer_path = "");

}  // namespace fedprllm
