// Small helpers shared by the command-line tools: progress lines on stderr and the exit path
// that prints a Status.
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
