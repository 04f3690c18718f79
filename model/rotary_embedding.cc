// RoPE angles for none / linear / dynamic / llama3 scaling (formulas in the header), and a
// per-thread cache of their cos and sin tables.
#include "model/rotary_embedding.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <tuple>

namespace fedprllm {

at::Tensor RopeAngles(const LlamaConfig& config, int64_t first, int64_t count, int64_t sequence_length,
                      const at::Device& device) {
  const int64_t dim = config.head_dim();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const RopeScaling& scaling = config.rope_scaling;
  double theta = config.rope_theta;
  if (scaling.type == RopeScaling::Type::kDynamic && sequence_length > scaling.original_max_position_embeddings) {
    const double original = static_cast<double>(scaling.original_max_position_embeddings);
    theta *= std::pow(scaling.factor * static_cast<double>(sequence_length) / original - (scaling.factor - 1.0),
                      static_cast<double>(dim) / static_cast<double>(dim - 2));
  }
  at::Tensor inv_freq = 1.0 / at::pow(theta, at::arange(0, dim, 2, f32) / static_cast<double>(dim));
  if (scaling.type == RopeScaling::Type::kLlama3) {
    const double original = static_cast<double>(scaling.original_max_position_embeddings);
    const double low_freq_wavelength = original / scaling.low_freq_factor;
    const double high_freq_wavelength = original / scaling.high_freq_factor;
    const at::Tensor wavelength = 2.0 * M_PI / inv_freq;
    const at::Tensor divided = at::where(wavelength > low_freq_wavelength, inv_freq / scaling.factor, inv_freq);
    const at::Tensor smooth =
        (original / wavelength - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor);
    const at::Tensor smoothed = (1.0 - smooth) * divided / scaling.factor + smooth * divided;
    const at::Tensor medium = (wavelength >= high_freq_wavelength).logical_and(wavelength <= low_freq_wavelength);
    inv_freq = at::where(medium, smoothed, divided);
  }
  at::Tensor positions = at::arange(first, first + count, f32);
  if (scaling.type == RopeScaling::Type::kLinear) positions = positions / scaling.factor;
  const at::Tensor freqs = at::outer(positions, inv_freq);
  return at::cat({freqs, freqs}, -1);
}

namespace {

// Everything a table's values depend on.
using RopeKey = std::tuple<int64_t, double, int, double, double, double, int64_t, int64_t, std::string, int>;

RopeKey KeyOf(const LlamaConfig& config, int64_t sequence_length, const at::Device& device, at::ScalarType dtype) {
  const RopeScaling& s = config.rope_scaling;
  const bool dynamic = s.type == RopeScaling::Type::kDynamic;
  return RopeKey(config.head_dim(), config.rope_theta, static_cast<int>(s.type), s.factor, s.low_freq_factor,
                 s.high_freq_factor, s.original_max_position_embeddings, dynamic ? sequence_length : -1, device.str(),
                 static_cast<int>(dtype));
}

struct CachedTable {
  RopeKey key;
  at::Tensor cos, sin;  // [positions, head_dim]
};

}  // namespace

RopeTables CachedRopeTables(const LlamaConfig& config, int64_t first, int64_t count, int64_t sequence_length,
                            const at::Device& device, at::ScalarType dtype) {
  constexpr size_t kEntries = 8;  // configs x devices x dtypes one thread uses at a time
  thread_local std::vector<CachedTable> cache;
  thread_local size_t next_victim = 0;
  const RopeKey key = KeyOf(config, sequence_length, device, dtype);
  const int64_t needed = first + count;
  CachedTable* entry = nullptr;
  for (CachedTable& e : cache) {
    if (e.key == key) entry = &e;
  }
  if (entry == nullptr || entry->cos.size(0) < needed) {
    // Round up so that token-by-token generation recomputes the table O(log n) times.
    int64_t positions = 64;
    while (positions < needed) positions *= 2;
    const at::Tensor angles = RopeAngles(config, 0, positions, sequence_length, device);
    CachedTable fresh{key, angles.cos().to(dtype), angles.sin().to(dtype)};
    if (entry != nullptr) {
      *entry = std::move(fresh);
    } else if (cache.size() < kEntries) {
      cache.push_back(std::move(fresh));
      entry = &cache.back();
    } else {
      entry = &cache[next_victim];
      next_victim = (next_victim + 1) % kEntries;
      *entry = std::move(fresh);
    }
  }
  const int64_t dim = config.head_dim();
  return RopeTables{entry->cos.narrow(0, first, count).view({count, 1, dim}),
                    entry->sin.narrow(0, first, count).view({count, 1, dim})};
}

at::Tensor RotateToHeadMajor(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t kv_heads) {
  TORCH_CHECK(x.dim() == 4 && kv_heads >= 1 && x.size(2) % kv_heads == 0 && x.size(3) % 2 == 0 &&
                  cos.sizes() == sin.sizes() && cos.dim() == 3 && cos.size(0) == x.size(1) && cos.size(1) == 1 &&
                  cos.size(2) == x.size(3),
              "RotateToHeadMajor: x ", x.sizes(), ", cos ", cos.sizes(), ", sin ", sin.sizes(), ", kv_heads ",
              kv_heads, " do not fit together");
  const int64_t batch = x.size(0), seq = x.size(1), heads = x.size(2), dim = x.size(3);
  const int64_t group = heads / kv_heads, half = dim / 2;
  const bool one_pass = x.device().is_cpu() && x.scalar_type() == at::kFloat && cos.scalar_type() == at::kFloat &&
                        sin.scalar_type() == at::kFloat && x.stride(3) == 1;
  if (!one_pass) {
    const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
    return (x * cos + rotated * sin)
        .view({batch, seq, kv_heads, group, dim})
        .permute({0, 2, 1, 3, 4})
        .reshape({batch * kv_heads, seq * group, dim});
  }
  const at::Tensor cos_c = cos.contiguous(), sin_c = sin.contiguous();
  at::Tensor out = at::empty({batch * kv_heads, seq * group, dim}, x.options());
  const float* in = x.data_ptr<float>();
  const float* cp = cos_c.data_ptr<float>();
  const float* sp = sin_c.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t sb = x.stride(0), ss = x.stride(1), sh = x.stride(2);
  at::parallel_for(0, batch * seq, 64, [&](int64_t begin, int64_t end) {
    for (int64_t bs = begin; bs < end; ++bs) {
      const int64_t b = bs / seq, s = bs % seq;
      const float* c = cp + s * dim;
      const float* sn = sp + s * dim;
      for (int64_t h = 0; h < heads; ++h) {
        const float* row = in + b * sb + s * ss + h * sh;
        const int64_t kv = h / group, g = h % group;
        float* o = op + ((b * kv_heads + kv) * seq + s) * group * dim + g * dim;
        for (int64_t d = 0; d < half; ++d) {
          const float straight = row[d] * c[d];
          const float turned = -row[d + half] * sn[d];
          o[d] = straight + turned;
        }
        for (int64_t d = half; d < dim; ++d) {
          const float straight = row[d] * c[d];
          const float turned = row[d - half] * sn[d];
          o[d] = straight + turned;
        }
      }
    }
  });
  return out;
}

}  // namespace fedprllm
