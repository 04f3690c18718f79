// Shamir secret sharing of byte strings over GF(2^8) (the AES field, x^8+x^4+x^3+x+1):
// each byte is the constant term of its own random polynomial of degree threshold-1.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fedprllm::secagg {

// One share: the evaluation point x (1..255) and the polynomials' values there, one per
// byte of the secret.
struct ShamirShare {
  uint8_t x = 0;
  std::vector<uint8_t> y;
};

// Splits `secret` into `count` shares at x = 1..count, any `threshold` of which recover it
// and fewer of which reveal nothing. 2 <= threshold <= count <= 255. Coefficients come
// from OpenSSL's RAND_bytes.
absl::StatusOr<std::vector<ShamirShare>> ShamirSplit(absl::Span<const uint8_t> secret, int count, int threshold);

// Recovers the secret from at least `threshold` shares with distinct nonzero x and equal
// lengths (only the first `threshold` are used). FAILED_PRECONDITION, saying how many
// arrived and how many are needed, when there are fewer.
absl::StatusOr<std::vector<uint8_t>> ShamirCombine(absl::Span<const ShamirShare> shares, int threshold);

}  // namespace fedprllm::secagg
