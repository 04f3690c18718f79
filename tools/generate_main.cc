// fedprllm-generate: writes text sampled from a model with a seed (the bundled job's
// per-site private stories and its held-out evaluation text).
#include <cstdio>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "model/generation.h"
#include "model/model_and_tokenizer.h"
#include "model/safetensors.h"
#include "tools/tool_flags.h"

ABSL_FLAG(std::string, model, "", "Model: Hugging Face directory or llama2.c .bin (required)");
ABSL_FLAG(std::string, tokenizer, "", "SentencePiece .model (default: found beside the model)");
ABSL_FLAG(std::string, out, "", "Output text file (required)");
ABSL_FLAG(int64_t, streams, 16, "Stories generated in parallel");
ABSL_FLAG(int64_t, rounds, 4, "Batches of streams");
ABSL_FLAG(int64_t, tokens, 256, "Tokens per stream");
ABSL_FLAG(double, temperature, 1.0, "Sampling temperature");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed");

namespace fedprllm {

absl::Status Run() {
  const std::string model_path = absl::GetFlag(FLAGS_model), out = absl::GetFlag(FLAGS_out);
  if (model_path.empty() || out.empty()) return absl::InvalidArgumentError("--model and --out are required");
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(model_path, absl::GetFlag(FLAGS_tokenizer)));
  LlamaModel model = std::move(loaded.model);
  Tokenizer tokenizer = std::move(loaded.tokenizer);
  GenerationOptions options;
  options.streams = absl::GetFlag(FLAGS_streams);
  options.tokens_per_stream = absl::GetFlag(FLAGS_tokens);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  std::string text;
  const int64_t rounds = absl::GetFlag(FLAGS_rounds);
  auto progress = PrintProgress("generating");
  for (int64_t r = 0; r < rounds; ++r) {
    options.seed = absl::GetFlag(FLAGS_seed) * 1000003ull + static_cast<uint64_t>(r);
    ASSIGN_OR_RETURN(std::string part, GenerateText(model, tokenizer, options));
    absl::StrAppend(&text, text.empty() ? "" : "\n\n", part);
    progress(r + 1, rounds);
  }
  RETURN_IF_ERROR(WriteFileAtomically(out, text + "\n"));
  std::printf("wrote %zu bytes to %s\n", text.size() + 1, out.c_str());
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-generate --model M --out FILE [--seed S] [--streams N] [--rounds R]");
  fedprllm::UseAllCores(fedprllm::PoolUse::kOperations);
  return fedprllm::ExitWith(fedprllm::Run(), "fedprllm-generate");
}
