// Fuzz target: the safetensors reader (model/safetensors.h, ReadSafetensors: length prefix,
// JSON header, dtype/shape/byte-range checks) and the sharded checkpoint index
// (model.safetensors.index.json, read by LlamaModel::Load of a Hugging Face directory).
//
//   input[0] even: the rest is a .safetensors file; every accepted tensor's bytes are read.
//   input[0] odd:  the rest is model.safetensors.index.json in a directory that also holds a
//                  fixed tiny config.json and its real shards (fuzz/tiny_checkpoint.h, written once
//                  per process).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include "absl/strings/string_view.h"

#include "fuzz/fuzz_support.h"
#include "fuzz/tiny_checkpoint.h"
#include "model/llama_config.h"
#include "model/llama_model.h"
#include "model/safetensors.h"

namespace fedprllm::fuzz {
namespace {

// The directory with the tiny sharded checkpoint (fuzz/tiny_checkpoint.h), written once.
const std::string& ShardedCheckpointDir() {
  static const std::string* dir = [] {
    const std::string& d = ScratchDir("safetensors_index");
    if (!WriteTinyShardedCheckpoint(d).ok()) __builtin_trap();  // the harness is broken
    return new std::string(d);
  }();
  return *dir;
}

void FuzzSafetensorsFile(absl::string_view bytes) {
  const std::string& path = WriteScratchFile("model.safetensors", bytes);
  std::vector<std::string> order;
  absl::StatusOr<TensorMap> tensors = ReadSafetensors(path, &order);
  Report("ReadSafetensors", tensors.status());
  if (!tensors.ok()) return;
  if (order.size() != tensors->size()) __builtin_trap();
  // Every accepted tensor must lie inside the file: touch each of its bytes.
  uint8_t sum = 0;
  for (const auto& [name, t] : *tensors) {
    if (!t.is_contiguous()) __builtin_trap();
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    for (size_t i = 0; i < t.nbytes(); ++i) sum ^= p[i];
  }
  volatile uint8_t sink = sum;
  (void)sink;
}

void FuzzIndex(absl::string_view bytes) {
  const std::string& dir = ShardedCheckpointDir();
  std::ofstream(dir + "/model.safetensors.index.json", std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  Report("LlamaModel::Load", LlamaModel::Load(dir).status());
}

}  // namespace
}  // namespace fedprllm::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm::fuzz;
  QuietLogs();
  if (size == 0) return 0;
  const absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    FuzzIndex(rest);
  } else {
    FuzzSafetensorsFile(rest);
  }
  return 0;
}
