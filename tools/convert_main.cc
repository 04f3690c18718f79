// fedprllm-convert: llama2.c checkpoint (or any loadable model) to Hugging Face layout.
#include <cstdio>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "model/llama_model.h"
#include "model/model_and_tokenizer.h"
#include "tools/tool_flags.h"

ABSL_FLAG(std::string, model, "", "Input model: llama2.c .bin checkpoint or Hugging Face directory (required)");
ABSL_FLAG(std::string, tokenizer, "", "SentencePiece .model file to copy (default: found beside the model)");
ABSL_FLAG(std::string, out, "", "Output directory (required)");
ABSL_FLAG(std::string, dtype, "", "Output dtype: float32, float16 or bfloat16 (default: the input's)");

namespace fedprllm {

absl::Status Run() {
  const std::string model_path = absl::GetFlag(FLAGS_model), out = absl::GetFlag(FLAGS_out);
  if (model_path.empty() || out.empty()) return absl::InvalidArgumentError("--model and --out are required");
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(model_path, absl::GetFlag(FLAGS_tokenizer)));
  LlamaModel model = std::move(loaded.model);
  if (!absl::GetFlag(FLAGS_dtype).empty()) {
    ASSIGN_OR_RETURN(at::ScalarType dtype, DtypeFromTorchName(absl::GetFlag(FLAGS_dtype)));
    ASSIGN_OR_RETURN(model, model.CastTo(dtype));
  }
  RETURN_IF_ERROR(model.SaveHf(out, loaded.tokenizer.path()));
  std::printf("wrote %s (%zu tensors, %s, fingerprint %s)\n", out.c_str(), model.tensors().size(),
              TorchDtypeName(model.config().dtype).c_str(), model.Fingerprint().c_str());
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-convert --model stories260K.bin --out DIR");
  fedprllm::UseAllCores();
  return fedprllm::ExitWith(fedprllm::Run(), "fedprllm-convert");
}
