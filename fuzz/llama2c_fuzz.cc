// Fuzz target: the llama2.c checkpoint loader (model/llama2c.cc, LoadLlama2c). The input is
// the whole .bin file: the 7 x int32 header, then the float32 arrays it implies. Accepted
// checkpoints are tiny (the corpus holds a minimized one), so the loaded model costs little;
// no forward pass is run.
#include <cstdint>
#include "absl/strings/string_view.h"

#include "fuzz/fuzz_support.h"
#include "model/llama_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm;
  fuzz::QuietLogs();
  const std::string& path =
      fuzz::WriteScratchFile("llama2c.bin", absl::string_view(reinterpret_cast<const char*>(data), size));
  absl::StatusOr<LlamaModel> model = LoadLlama2c(path);
  fuzz::Report("LoadLlama2c", model.status());
  if (model.ok()) {
    // What every caller asks of a loaded model next.
    if (!model->config().Validate().ok()) __builtin_trap();
    (void)model->config().max_sequence_length();
  }
  return 0;
}
