// Sizes the CPU runtime that tensor work runs on: LibTorch's OpenMP pool, OpenBLAS's own
// thread pool and glibc's allocator. Every binary calls UseAllCores() at start-up, and
// FitBlasThreadsToModel() once it knows the model.
#pragma once

#include <cstdint>

namespace fedprllm {

// Gives LibTorch's intra-op pool one thread per core (Debian's OpenMP build can start with
// one) unless OMP_NUM_THREADS is set, and keeps freed tensor buffers below 32 MiB in the
// heap: returning them to the kernel makes every later allocation page-fault afresh, which
// cost a third of a small model's forward time.
void UseAllCores();

// Models with a hidden size below 512 are small: their single tensor operations are too small
// to spread over cores, so callers should spread independent work instead.
constexpr int64_t kSmallModelHiddenSize = 512;
inline bool IsSmallModel(int64_t hidden_size) { return hidden_size < kSmallModelHiddenSize; }

// Small models multiply matrices too small for OpenBLAS's threads to pay; its pool then only
// competes with LibTorch's for the cores. For them OpenBLAS runs single-threaded, unless
// OPENBLAS_NUM_THREADS is set. Larger models keep its default.
void FitBlasThreadsToModel(int64_t hidden_size);

}  // namespace fedprllm
