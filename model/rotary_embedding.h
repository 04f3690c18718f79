// Rotary position embedding angles for every rope_scaling type LLaMA-family configs use,
// with the formulas of the transformers version that introduced each:
//   none:    inv_freq_i = 1 / theta^(2i / d)
//   linear:  (4.31) positions divided by factor
//   dynamic: (4.31, NTK) when the sequence is longer than the original context L,
//            theta' = theta · (factor · seq / L − (factor − 1))^(d / (d − 2))
//   llama3:  (4.43) wavelengths 2π / inv_freq above L / low_freq_factor are divided by factor,
//            below L / high_freq_factor kept, and those between blended by
//            s = (L / wavelength − low) / (high − low): (1 − s) · f / factor + s · f.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "model/llama_config.h"

namespace fedprllm {

// The angles position·inv_freq of positions [first, first + count), as [count, head_dim]
// (each frequency twice, rotate-half layout), float32 on `device`. `sequence_length` is
// the length the dynamic type scales for (positions seen so far plus these). Throws
// c10::Error like any LibTorch call; callers sit behind TorchCall.
at::Tensor RopeAngles(const LlamaConfig& config, int64_t first, int64_t count, int64_t sequence_length,
                      const at::Device& device);

// cos and sin of RopeAngles(config, first, count, sequence_length, device), each
// [count, 1, head_dim] in `dtype` on `device`: the tables of a decoder layer's q and k.
struct RopeTables {
  at::Tensor cos, sin;
};

// RopeTables with the angles of positions [0, n) computed once per thread and config and
// narrowed to [first, first + count): the angles are those of a fresh RopeAngles (the angle of
// a position does not depend on which others are computed). The dynamic type's angles depend on
// `sequence_length`, so its tables are kept per sequence length. The returned tensors are
// shared with later calls: callers only read them. Throws c10::Error like RopeAngles.
RopeTables CachedRopeTables(const LlamaConfig& config, int64_t first, int64_t count, int64_t sequence_length,
                            const at::Device& device, at::ScalarType dtype);

// x rotated by the tables (x * cos + rotate_half(x) * sin, HF's apply_rotary_pos_emb) and laid
// out by key/value head for CausalAttention: x is [batch, seq, kv_heads * group, head_dim],
// cos and sin [seq, 1, head_dim]; the result is [batch * kv_heads, seq * group, head_dim],
// whose row s * group + g of entry b * kv_heads + kv is head kv * group + g at position s. On
// the CPU in float32 one pass computes it with the same float operations as the tensor
// expression (two rounded products and their rounded sum), so the values are identical;
// elsewhere it is that expression, permuted. Throws c10::Error like any LibTorch call.
at::Tensor RotateToHeadMajor(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t kv_heads);

}  // namespace fedprllm
