// Sizes LibTorch's intra-op thread pool. Debian's OpenMP build of LibTorch can start with
// one thread on machines where OpenMP's default sees a single CPU, so every binary calls
// UseAllCores() at start-up unless OMP_NUM_THREADS says otherwise.
#pragma once

#include <ATen/Parallel.h>

#include <cstdlib>
#include <thread>

namespace fedprllm {

inline void UseAllCores() {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores > 1 && at::get_num_threads() < static_cast<int>(cores)) at::set_num_threads(static_cast<int>(cores));
}

}  // namespace fedprllm
