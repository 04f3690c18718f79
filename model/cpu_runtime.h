// Sizes the CPU runtime that tensor work runs on: LibTorch's OpenMP pool, OpenBLAS's own
// thread pool and glibc's allocator. Every binary calls UseAllCores() at start-up, and
// FitThreadsToModel() (LoadModelAndTokenizer does) once it knows the model.
//
// Thread policy, in order of precedence:
//  1. OMP_NUM_THREADS set: LibTorch's pool has that many threads (OpenMP reads it), and
//     nothing here changes it.
//  2. FEDPRLLM_THREADS=N, a positive integer: the pool has N threads, for any model. This is
//     the setting for daemons that share a machine: three sites and a server on 2 cores run
//     with FEDPRLLM_THREADS=1 each (the default for a small model anyway), a site of a large
//     model alone on 16 cores with 16. A value that is not a positive integer is reported on
//     stderr, naming the variable, and ignored.
//  3. Otherwise one thread per core at start-up, and then by what the process does:
//     - PoolUse::kOperations (the site daemon, prune, generate, convert: one operation at a
//       time): with a small model (IsSmallModel) the pool drops to one thread once the model
//       is known. Its single operations are too small to spread over cores; extra threads
//       only cost, and collapse when processes share the cores (idle OpenMP threads spin on
//       cores another process needs).
//     - PoolUse::kJobs, the default (the simulator, perplexity evaluation): the process
//       spreads independent work (jobs, batches of windows) over the pool, each piece
//       single-threaded, so the pool keeps one thread per core.
//     A process that never calls UseAllCores (a test) keeps LibTorch's default pool.
// OpenBLAS's own pool runs single-threaded for a small model unless OPENBLAS_NUM_THREADS is set.
#pragma once

#include <cstdint>

namespace fedprllm {

// How a process uses LibTorch's intra-op pool (see the policy above).
enum class PoolUse {
  kOperations,  // each tensor operation may use the pool
  kJobs,        // independent pieces of work run on the pool, each single-threaded
};

// Sizes LibTorch's intra-op pool by rules 1-3 above (Debian's OpenMP build can start with one
// thread), and keeps freed tensor buffers below 32 MiB in the heap: returning them to the
// kernel makes every later allocation page-fault afresh, which cost a third of a small model's
// forward time.
void UseAllCores(PoolUse use = PoolUse::kJobs);

// Models with a hidden size below 512 are small: their single tensor operations are too small
// to spread over cores, so callers should spread independent work instead.
constexpr int64_t kSmallModelHiddenSize = 512;
inline bool IsSmallModel(int64_t hidden_size) { return hidden_size < kSmallModelHiddenSize; }

// Small models multiply matrices too small for OpenBLAS's threads to pay; its pool then only
// competes with LibTorch's for the cores. For them OpenBLAS runs single-threaded, unless
// OPENBLAS_NUM_THREADS is set. Larger models keep its default.
void FitBlasThreadsToModel(int64_t hidden_size);

// FitBlasThreadsToModel, and rule 3 of the policy: in a process that called
// UseAllCores(PoolUse::kOperations), with neither OMP_NUM_THREADS nor FEDPRLLM_THREADS set,
// a small model gets a one-thread pool. Changes nothing otherwise.
void FitThreadsToModel(int64_t hidden_size);

}  // namespace fedprllm
