// Small helpers shared by the command-line tools: device/dtype flags, progress lines on
// stderr, and the exit path that prints a Status.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/cpu_runtime.h"
#include "model/llama_model.h"
#include "model/perplexity.h"
#include "model/torch_wall.h"

namespace fedprllm {

inline absl::StatusOr<ComputeOptions> ParseComputeOptions(const std::string& device, const std::string& dtype) {
  ComputeOptions options;
  auto parsed = TorchCall(absl::StrCat("parsing --device ", device), [&] { return at::Device(device); });
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat("--device ", device, ": expected cpu, cuda or cuda:N"));
  options.device = *parsed;
  if (options.device.is_cuda() && !at::hasCUDA()) {
    return absl::FailedPreconditionError("--device cuda: this build or machine has no CUDA");
  }
  if (!dtype.empty()) {
    auto d = DtypeFromTorchName(dtype);
    if (!d.ok()) return d.status();
    options.dtype = *d;
  }
  return options;
}

// A progress callback printing "<what>: done/total" on one rewritten stderr line.
inline ProgressCallback PrintProgress(std::string what) {
  return [what](int64_t done, int64_t total) {
    std::fprintf(stderr, "\r%s: %lld/%lld", what.c_str(), static_cast<long long>(done), static_cast<long long>(total));
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

inline int ExitWith(const absl::Status& status, const char* program) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "%s: error: %s\n", program, std::string(status.message()).c_str());
  return 1;
}

}  // namespace fedprllm
