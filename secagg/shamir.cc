// Shamir sharing over GF(2^8) with log/exp tables of the generator 3.
#include "secagg/shamir.h"

#include <openssl/rand.h>

#include <array>

#include "absl/strings/str_cat.h"

namespace fedprllm::secagg {
namespace {

struct FieldTables {
  std::array<uint8_t, 512> exp{};
  std::array<uint8_t, 256> log{};
  FieldTables() {
    uint8_t value = 1;
    for (int i = 0; i < 255; ++i) {
      exp[i] = value;
      log[value] = static_cast<uint8_t>(i);
      // value *= 3: value ^ xtime(value)
      const uint8_t doubled = static_cast<uint8_t>((value << 1) ^ ((value & 0x80) ? 0x1b : 0));
      value = static_cast<uint8_t>(value ^ doubled);
    }
    for (int i = 255; i < 512; ++i) exp[i] = exp[i - 255];
  }
};

const FieldTables& Tables() {
  static const FieldTables tables;
  return tables;
}

uint8_t Multiply(uint8_t a, uint8_t b) {
  if (a == 0 || b == 0) return 0;
  const FieldTables& t = Tables();
  return t.exp[t.log[a] + t.log[b]];
}

uint8_t Divide(uint8_t a, uint8_t b) {  // b != 0
  if (a == 0) return 0;
  const FieldTables& t = Tables();
  return t.exp[t.log[a] + 255 - t.log[b]];
}

}  // namespace

absl::StatusOr<std::vector<ShamirShare>> ShamirSplit(absl::Span<const uint8_t> secret, int count, int threshold) {
  if (threshold < 2 || threshold > count || count > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("Shamir sharing needs 2 <= threshold <= shares <= 255; got threshold ", threshold, " of ", count));
  }
  std::vector<uint8_t> coefficients(secret.size() * static_cast<size_t>(threshold - 1));
  if (!coefficients.empty() && RAND_bytes(coefficients.data(), static_cast<int>(coefficients.size())) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  std::vector<ShamirShare> shares(count);
  for (int i = 0; i < count; ++i) {
    ShamirShare& share = shares[i];
    share.x = static_cast<uint8_t>(i + 1);
    share.y.resize(secret.size());
    for (size_t byte = 0; byte < secret.size(); ++byte) {
      // Horner from the highest coefficient down to the secret.
      uint8_t value = 0;
      for (int k = threshold - 2; k >= 0; --k) {
        value = static_cast<uint8_t>(Multiply(value, share.x) ^ coefficients[byte * (threshold - 1) + k]);
      }
      share.y[byte] = static_cast<uint8_t>(Multiply(value, share.x) ^ secret[byte]);
    }
  }
  return shares;
}

absl::StatusOr<std::vector<uint8_t>> ShamirCombine(absl::Span<const ShamirShare> shares, int threshold) {
  if (threshold < 2) return absl::InvalidArgumentError(absl::StrCat("Shamir threshold ", threshold, " is below 2"));
  if (static_cast<int>(shares.size()) < threshold) {
    return absl::FailedPreconditionError(
        absl::StrCat("Shamir recovery has ", shares.size(), " shares and needs ", threshold));
  }
  const absl::Span<const ShamirShare> used = shares.subspan(0, threshold);
  const size_t length = used[0].y.size();
  for (size_t i = 0; i < used.size(); ++i) {
    if (used[i].x == 0) return absl::InvalidArgumentError("a Shamir share has x = 0");
    if (used[i].y.size() != length) return absl::InvalidArgumentError("Shamir shares of different lengths");
    for (size_t j = 0; j < i; ++j) {
      if (used[j].x == used[i].x) {
        return absl::InvalidArgumentError(absl::StrCat("two Shamir shares at x = ", static_cast<int>(used[i].x)));
      }
    }
  }
  // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); subtraction is XOR.
  std::vector<uint8_t> basis;
  basis.reserve(used.size());
  for (size_t i = 0; i < used.size(); ++i) {
    uint8_t numerator = 1, denominator = 1;
    for (size_t j = 0; j < used.size(); ++j) {
      if (j == i) continue;
      numerator = Multiply(numerator, used[j].x);
      denominator = Multiply(denominator, static_cast<uint8_t>(used[j].x ^ used[i].x));
    }
    basis.push_back(Divide(numerator, denominator));
  }
  std::vector<uint8_t> secret = used[0].y;  // every byte is overwritten
  for (size_t byte = 0; byte < length; ++byte) {
    uint8_t value = 0;
    for (size_t i = 0; i < used.size(); ++i) value ^= Multiply(basis[i], used[i].y[byte]);
    secret[byte] = value;
  }
  return secret;
}

}  // namespace fedprllm::secagg
