// RoPE angles for none / linear / dynamic / llama3 scaling (formulas in the header).
#include "model/rotary_embedding.h"

#include <cmath>

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

}  // namespace fedprllm
