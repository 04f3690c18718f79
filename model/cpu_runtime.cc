// CPU runtime sizing: the thread policy of cpu_runtime.h over LibTorch's OpenMP pool, the
// OpenBLAS pool (found with dlsym, absent on other BLAS builds) and glibc malloc thresholds.
#include "model/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace fedprllm {
namespace {

// What UseAllCores was told: -1 before any call (tests), else a PoolUse.
std::atomic<int> pool_use{-1};

// FEDPRLLM_THREADS as a positive int, 0 when unset, -1 (after a note on stderr) when invalid.
int ThreadsFromEnvironment() {
  const char* text = std::getenv("FEDPRLLM_THREADS");
  if (text == nullptr) return 0;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < 1 || value > 4096) {
    std::fprintf(stderr, "FEDPRLLM_THREADS='%s' is not a thread count in [1, 4096]; ignored\n", text);
    return -1;
  }
  return static_cast<int>(value);
}

}  // namespace

void UseAllCores(PoolUse use) {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  pool_use.store(static_cast<int>(use));
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  if (const int threads = ThreadsFromEnvironment(); threads > 0) {
    at::set_num_threads(threads);
    return;
  }
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores > 1 && at::get_num_threads() < static_cast<int>(cores)) at::set_num_threads(static_cast<int>(cores));
}

void FitBlasThreadsToModel(int64_t hidden_size) {
  if (!IsSmallModel(hidden_size) || std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  using SetThreads = void (*)(int);
  if (auto set_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_threads(1);
  }
}

void FitThreadsToModel(int64_t hidden_size) {
  FitBlasThreadsToModel(hidden_size);
  if (pool_use.load() != static_cast<int>(PoolUse::kOperations) || !IsSmallModel(hidden_size)) return;
  if (std::getenv("OMP_NUM_THREADS") != nullptr || std::getenv("FEDPRLLM_THREADS") != nullptr) return;
  at::set_num_threads(1);
}

}  // namespace fedprllm
