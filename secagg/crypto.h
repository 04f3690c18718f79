// The OpenSSL primitives of the secure sum: X25519 key pairs and agreement, HKDF-SHA256,
// the ChaCha20 mask stream, ChaCha20-Poly1305 sealing of shares, and signatures with a
// site's TLS key checked against the federation CA.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fedprllm::secagg {

using Key32 = std::array<uint8_t, 32>;

struct X25519KeyPair {
  Key32 private_key{};
  Key32 public_key{};
};

absl::StatusOr<X25519KeyPair> GenerateX25519KeyPair();
// The public key of a raw X25519 private key.
absl::StatusOr<Key32> X25519PublicKey(const Key32& private_key);
// HKDF-SHA256(X25519(private_key, peer_public_key), salt, info), 32 bytes.
absl::StatusOr<Key32> DeriveSharedKey(const Key32& private_key, const Key32& peer_public_key, absl::string_view salt,
                                      absl::string_view info);

// 32 random bytes from RAND_bytes.
absl::StatusOr<Key32> RandomKey();

// Adds (sign = +1) or subtracts (sign = -1) the ChaCha20 key stream under `seed` (zero
// nonce), read as little-endian 64-bit words, to `words` modulo 2^64.
absl::Status ApplyMaskStream(const Key32& seed, int sign, absl::Span<uint64_t> words);

// ChaCha20-Poly1305: nonce (12 random bytes) || ciphertext || tag (16 bytes).
absl::StatusOr<std::string> Seal(const Key32& key, absl::string_view associated_data, absl::string_view plaintext);
// DATA_LOSS when the tag does not verify (wrong key, altered bytes or associated data).
absl::StatusOr<std::string> Open(const Key32& key, absl::string_view associated_data, absl::string_view sealed);

// Signs `message` with a PEM private key (EC or RSA with SHA-256, Ed25519 as is).
absl::StatusOr<std::string> SignMessage(const std::string& private_key_pem, absl::string_view message);

// OK if `certificate_pem` (leaf first, then any intermediates) chains to `ca_pem`, its
// subject CN is `site`, and `signature` over `message` verifies with its public key.
// PERMISSION_DENIED naming the site and what failed otherwise.
// The common name of the first certificate in `certificate_pem`: a site's name in the secure
// sum (VerifySiteSignature checks the advertised name against it). INVALID_ARGUMENT if it
// cannot be parsed or has no common name.
absl::StatusOr<std::string> CertificateCommonName(const std::string& certificate_pem);
absl::Status VerifySiteSignature(const std::string& ca_pem, const std::string& certificate_pem,
                                 const std::string& site, absl::string_view message, absl::string_view signature);

}  // namespace fedprllm::secagg
