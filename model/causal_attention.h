// Causal self-attention over the keys a query can see, for LlamaModel's decoder layer.
//
//   // q: [batch * kv_heads, seq * group, head_dim], k and v: [batch * kv_heads, past + seq, head_dim]
//   at::Tensor out = CausalAttention(q, k, v, past, group, 1.0 / std::sqrt(head_dim));
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace fedprllm {

// softmax(scale * q k^T + causal mask) v without the masked half. `q` is
// [bk, seq * group, head_dim], row s * group + g holding query position past + s (the `group`
// query heads that share one key/value head, stacked), `k` and `v` are [bk, past + seq, head_dim],
// all on one device in one dtype. Query position p sees keys 0 .. p. Returns
// [bk, seq * group, head_dim] in q's dtype; every value equals the full masked computation's
// (one baddbmm over all past + seq keys with -inf above the diagonal, softmax in float32, one
// bmm) up to float rounding (relative differences of order 1e-7).
//
// On the CPU, in float32, a fused kernel computes each query row's scores, exact softmax and
// weighted sum in registers and a row buffer (no score matrix, no masked entries): the AVX-512
// one for head_dim 8, 16 or 32 on a CPU with AVX-512F, else the AVX2 one for head_dim a
// multiple of 8 up to 32 on a CPU with AVX2 and FMA. Otherwise blocks of query positions
// are computed with LibTorch operations over only their visible keys. Throws c10::Error like
// any LibTorch call; callers sit behind TorchCall.
at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past, int64_t group,
                           double scale);

// CausalAttention's fused CPU kernels.
enum class AttentionKernel { kAvx2, kAvx512 };

// CausalAttention computed by `kernel` alone (for tests and benchmarks), or an undefined tensor
// where that kernel does not apply (another device or dtype, a head size it does not handle, a
// CPU without its instructions).
at::Tensor FusedCausalAttentionWith(AttentionKernel kernel, const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v, int64_t past, int64_t group, double scale);

// The LibTorch path of CausalAttention on any device and dtype (exposed for tests, which
// compare it with the fused kernel and the full masked computation).
at::Tensor BlockedCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past,
                                  int64_t group, double scale);

}  // namespace fedprllm
