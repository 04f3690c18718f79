// fedprllm-eval: perplexity of a model on a text file (Wanda/FedPrLLM windowed protocol).
// Its last line of output is `perplexity: <value>`.
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "model/model_and_tokenizer.h"
#include "model/perplexity.h"
#include "model/tokenizer.h"
#include "tools/tool_flags.h"

ABSL_FLAG(std::string, model, "", "Model: Hugging Face directory or llama2.c .bin checkpoint (required)");
ABSL_FLAG(std::string, text, "", "UTF-8 text file to evaluate on, CRLF line ends read as LF (required)");
ABSL_FLAG(std::string, tokenizer, "", "SentencePiece .model file (default: found beside the model)");
ABSL_FLAG(int64_t, seqlen, 256, "Tokens per window");
ABSL_FLAG(int64_t, batch_size, 8, "Windows per forward pass");
ABSL_FLAG(int64_t, max_windows, 0, "Evaluate at most this many windows (0 = all)");
ABSL_FLAG(std::string, device, "auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "", "Compute dtype: float32, bfloat16 or float16 (default: the model's)");

namespace fedprllm {

absl::Status Run() {
  ASSIGN_OR_RETURN(ComputeOptions compute, ParseComputeOptions(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_dtype)));
  std::fprintf(stderr, "computing on %s\n", DescribeDevice(compute, absl::GetFlag(FLAGS_device)).c_str());
  const std::string model_path = absl::GetFlag(FLAGS_model);
  const std::string text_path = absl::GetFlag(FLAGS_text);
  if (model_path.empty() || text_path.empty()) return absl::InvalidArgumentError("--model and --text are required");
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(model_path, absl::GetFlag(FLAGS_tokenizer)));
  LlamaModel model = std::move(loaded.model);
  Tokenizer tokenizer = std::move(loaded.tokenizer);
  PerplexityOptions options;
  options.seqlen = absl::GetFlag(FLAGS_seqlen);
  RETURN_IF_ERROR(CheckSeqlenFitsModel("--seqlen", options.seqlen, model.config()));
  int64_t crlf = 0;
  ASSIGN_OR_RETURN(std::string text, ReadTextForTokenizing(text_path, &crlf));
  if (crlf > 0) std::fprintf(stderr, "%s\n", CrlfNote(text_path, crlf).c_str());
  std::fprintf(stderr, "tokenizing %s (%zu bytes)\n", text_path.c_str(), text.size());
  ASSIGN_OR_RETURN(std::vector<int> tokens, tokenizer.Encode(text, /*add_bos=*/true));
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.max_windows = absl::GetFlag(FLAGS_max_windows);
  options.compute = compute;
  std::fprintf(stderr, "%zu tokens, %zu windows of %lld\n", tokens.size(), tokens.size() / options.seqlen,
               static_cast<long long>(options.seqlen));
  ASSIGN_OR_RETURN(PerplexityResult result, EvaluatePerplexity(model, tokens, options, PrintProgress("evaluating")));
  std::printf("windows: %lld\npredicted tokens: %lld\nmean nll: %.12f\nperplexity: %.4f\n",
              static_cast<long long>(result.windows), static_cast<long long>(result.predicted_tokens),
              result.mean_nll, result.perplexity);
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-eval --model M --text FILE [--seqlen N] [--device D]");
  fedprllm::UseAllCores();
  return fedprllm::ExitWith(fedprllm::Run(), "fedprllm-eval");
}
