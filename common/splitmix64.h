// splitmix64: the project's portable pseudo-random generator, used wherever a result must be
// the same on every machine (calibration windows, client splits, random tie-breaks, sampling
// in text generation, synthetic weights).
#pragma once

#include <cstdint>
#include <string_view>

namespace fedprllm {

inline constexpr uint64_t kSplitMix64Increment = 0x9E3779B97F4A7C15ull;

// splitmix64's output finalizer: a bijective mix of 64 bits.
inline uint64_t SplitMix64Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// One step: advances *state by the increment and returns the mixed new state.
inline uint64_t SplitMix64(uint64_t* state) { return SplitMix64Mix(*state += kSplitMix64Increment); }

// FNV-1a, 64 bits: turns a name (a tensor's) into the seed of its own stream.
inline uint64_t Fnv1a64(std::string_view text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

}  // namespace fedprllm
