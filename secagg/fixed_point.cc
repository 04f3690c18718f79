// Fixed-point encode/decode with overflow checks.
#include "secagg/fixed_point.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace fedprllm::secagg {

absl::StatusOr<std::vector<uint64_t>> EncodeFixedPoint(absl::Span<const double> values, const FixedPointCode& code) {
  const double scale = std::ldexp(1.0, code.fraction_bits);
  const double bound = static_cast<double>(code.Bound());
  std::vector<uint64_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double scaled = std::nearbyint(values[i] * scale);
    if (!std::isfinite(scaled) || std::fabs(scaled) >= bound) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, " (", values[i], ") does not fit the fixed-point code: |x| * 2^",
                                                     code.fraction_bits, " must be below 2^63/", kMaxSites));
    }
    out[i] = static_cast<uint64_t>(static_cast<int64_t>(scaled));
  }
  return out;
}

absl::StatusOr<std::vector<double>> DecodeFixedPointSum(absl::Span<const uint64_t> sum, int contributors,
                                                        bool nonnegative, const FixedPointCode& code) {
  if (contributors < 1 || contributors > kMaxSites) {
    return absl::InvalidArgumentError(absl::StrCat("a sum of ", contributors, " vectors cannot be decoded"));
  }
  const int64_t limit = static_cast<int64_t>(code.Bound()) * contributors;  // < 2^63
  std::vector<double> out(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) {
    const int64_t value = static_cast<int64_t>(sum[i]);
    if (value <= -limit || value >= limit || (nonnegative && value < 0)) {
      return absl::OutOfRangeError(absl::StrCat("entry ", i, " of the sum of ", contributors,
                                                " vectors overflowed the fixed-point code (", value,
                                                "); the round is refused"));
    }
    out[i] = std::ldexp(static_cast<double>(value), -code.fraction_bits);
  }
  return out;
}

}  // namespace fedprllm::secagg
