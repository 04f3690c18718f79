// CPU runtime sizing: OpenMP pool, OpenBLAS pool (found with dlsym, absent on other BLAS
// builds) and glibc malloc thresholds.
#include "model/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>

#include <cstdlib>
#include <thread>

namespace fedprllm {

void UseAllCores() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
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

}  // namespace fedprllm
