// LoadModelAndTokenizer: model, thread sizing and tokenizer discovery in one call.
#include "model/model_and_tokenizer.h"

#include <utility>

#include "common/status_macros.h"
#include "model/cpu_runtime.h"

namespace fedprllm {

absl::StatusOr<ModelAndTokenizer> LoadModelAndTokenizer(const std::string& model_path,
                                                        const std::string& tokenizer_path) {
  ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::Load(model_path));
  FitThreadsToModel(model.config().hidden_size);
  ASSIGN_OR_RETURN(std::string found, FindTokenizer(model_path, tokenizer_path));
  ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Load(found));
  return ModelAndTokenizer{std::move(model), std::move(tokenizer)};
}

}  // namespace fedprllm
