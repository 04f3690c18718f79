// Fixed-point coding of real vectors into Z/2^64 for the secure sum, with the bounds that
// keep any honest sum of up to kMaxSites vectors exact (docs/secure_aggregation.md).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fedprllm::secagg {

inline constexpr int kMaxSites = 255;

struct FixedPointCode {
  int fraction_bits = 24;  // resolution 2^-fraction_bits
  // The largest |encoded value| a site may send: below 2^63 / kMaxSites.
  uint64_t Bound() const { return (uint64_t{1} << 63) / kMaxSites; }
};

// round(x * 2^fraction_bits) in two's complement. INVALID_ARGUMENT, naming the entry, for a
// value that is not finite or whose code is not below Bound().
absl::StatusOr<std::vector<uint64_t>> EncodeFixedPoint(absl::Span<const double> values, const FixedPointCode& code);

// The real sum of `contributors` encoded vectors from their sum modulo 2^64. Fails (the
// round must be refused) when an entry lies outside (-contributors * Bound(),
// contributors * Bound()), or is negative while `nonnegative`: an overflow, or a site that
// broke the bound.
absl::StatusOr<std::vector<double>> DecodeFixedPointSum(absl::Span<const uint64_t> sum, int contributors,
                                                        bool nonnegative, const FixedPointCode& code);

}  // namespace fedprllm::secagg
