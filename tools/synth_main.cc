// fedprllm-synth: a Hugging Face directory with seeded random weights in the exact shapes
// and config of a named LLaMA-family architecture (model/synthetic_checkpoint.h).
#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "model/synthetic_checkpoint.h"
#include "tools/tool_flags.h"

ABSL_FLAG(std::string, arch, "", "Architecture (--list prints them), e.g. llama-2-7b (required)");
ABSL_FLAG(std::string, dtype, "bfloat16", "Storage dtype: bfloat16, float16 or float32");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the weights");
ABSL_FLAG(std::string, out, "", "Output directory (required)");
ABSL_FLAG(std::string, max_shard_size, "5GB", "Largest shard, as Hugging Face writes it: 5GB, 500MB, 2000000 (bytes)");
ABSL_FLAG(int64_t, layers, 0, "Decoder layers, for a shallower model of the same shapes (0: the architecture's)");
ABSL_FLAG(std::string, tokenizer, "", "SentencePiece .model file copied as tokenizer.model (optional)");
ABSL_FLAG(bool, list, false, "Print the known architectures and their parameter counts, then exit");

namespace fedprllm {

// "5GB" = 5e9, "500MB" = 5e8, "1KB" = 1000, a bare number = bytes (Hugging Face's units).
absl::StatusOr<uint64_t> ParseShardSize(const std::string& text) {
  uint64_t scale = 1;
  std::string digits = text;
  for (const auto& [suffix, factor] : {std::pair{"GB", 1'000'000'000ull}, {"MB", 1'000'000ull}, {"KB", 1'000ull}}) {
    if (digits.size() > 2 && digits.compare(digits.size() - 2, 2, suffix) == 0) {
      digits.resize(digits.size() - 2);
      scale = factor;
      break;
    }
  }
  uint64_t value = 0;
  if (!absl::SimpleAtoi(digits, &value) || value == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--max_shard_size \"", text, "\": expected e.g. 5GB, 500MB or bytes"));
  }
  return value * scale;
}

absl::Status Run() {
  if (absl::GetFlag(FLAGS_list)) {
    for (const std::string& name : SyntheticArchitectureNames()) {
      ASSIGN_OR_RETURN(LlamaConfig c, SyntheticArchitecture(name));
      std::printf("%-16s %14lld parameters  hidden %lld, %lld layers, %lld/%lld heads, vocab %lld\n", name.c_str(),
                  static_cast<long long>(ParameterCount(c)), static_cast<long long>(c.hidden_size),
                  static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.num_attention_heads),
                  static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.vocab_size));
    }
    return absl::OkStatus();
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (absl::GetFlag(FLAGS_arch).empty() || out.empty()) return absl::InvalidArgumentError("--arch and --out are required");
  ASSIGN_OR_RETURN(LlamaConfig config, SyntheticArchitecture(absl::GetFlag(FLAGS_arch)));
  ASSIGN_OR_RETURN(config.dtype, DtypeFromTorchName(absl::GetFlag(FLAGS_dtype)));
  if (absl::GetFlag(FLAGS_layers) < 0) return absl::InvalidArgumentError("--layers must be >= 0");
  if (absl::GetFlag(FLAGS_layers) > 0) config.num_hidden_layers = absl::GetFlag(FLAGS_layers);
  SyntheticOptions options;
  options.seed = absl::GetFlag(FLAGS_seed);
  ASSIGN_OR_RETURN(options.max_shard_bytes, ParseShardSize(absl::GetFlag(FLAGS_max_shard_size)));
  options.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  const auto start = std::chrono::steady_clock::now();
  auto last = start - std::chrono::seconds(10);
  options.progress = [&](uint64_t written, uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::seconds(5) && written != total) return;
    last = now;
    const double seconds = std::chrono::duration<double>(now - start).count();
    std::fprintf(stderr, "fedprllm-synth: %.2f of %.2f GB written (%.0f%%), %.0f s, %.0f MB/s\n", written / 1e9,
                 total / 1e9, 100.0 * written / total, seconds, written / 1e6 / std::max(seconds, 1e-3));
  };
  RETURN_IF_ERROR(WriteSyntheticCheckpoint(config, options, out));
  std::printf("wrote %s: %s, %lld parameters, %lld layers, %s, seed %llu\n", out.c_str(),
              absl::GetFlag(FLAGS_arch).c_str(), static_cast<long long>(ParameterCount(config)),
              static_cast<long long>(config.num_hidden_layers), TorchDtypeName(config.dtype).c_str(),
              static_cast<unsigned long long>(options.seed));
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-synth --arch llama-2-7b --out DIR [--dtype bfloat16] [--seed S]");
  fedprllm::UseAllCores();
  return fedprllm::ExitWith(fedprllm::Run(), "fedprllm-synth");
}
