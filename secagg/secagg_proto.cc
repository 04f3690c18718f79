// Conversions of the secure sum's messages to and from protobuf.
#include "secagg/secagg_proto.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fedprllm::secagg {
namespace {

std::string KeyBytes(const Key32& key) { return std::string(key.begin(), key.end()); }

absl::StatusOr<Key32> KeyOf(const std::string& bytes, const char* what) {
  Key32 key{};
  if (bytes.size() != key.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", bytes.size(), " bytes, expected 32"));
  }
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

v1::SecAggRevealedShare ToProto(const RevealedShare& share) {
  v1::SecAggRevealedShare out;
  out.set_owner(share.owner);
  out.set_x(share.share.x);
  out.set_y(std::string(share.share.y.begin(), share.share.y.end()));
  return out;
}

absl::StatusOr<RevealedShare> FromProto(const v1::SecAggRevealedShare& share) {
  if (share.x() < 1 || share.x() > 255) {
    return absl::InvalidArgumentError(absl::StrCat("share of ", share.owner(), " at point ", share.x()));
  }
  RevealedShare out;
  out.owner = share.owner();
  out.share.x = static_cast<uint8_t>(share.x());
  out.share.y.assign(share.y().begin(), share.y().end());
  return out;
}

}  // namespace

v1::SecAggAdvertisement ToProto(const KeyAdvertisement& advertisement) {
  v1::SecAggAdvertisement out;
  out.set_site(advertisement.site);
  out.set_cipher_public_key(KeyBytes(advertisement.cipher_public_key));
  out.set_mask_public_key(KeyBytes(advertisement.mask_public_key));
  out.set_certificate_pem(advertisement.certificate_pem);
  out.set_signature(advertisement.signature);
  return out;
}

absl::StatusOr<KeyAdvertisement> FromProto(const v1::SecAggAdvertisement& advertisement) {
  KeyAdvertisement out;
  out.site = advertisement.site();
  absl::StatusOr<Key32> cipher = KeyOf(advertisement.cipher_public_key(), "cipher_public_key");
  if (!cipher.ok()) return cipher.status();
  absl::StatusOr<Key32> mask = KeyOf(advertisement.mask_public_key(), "mask_public_key");
  if (!mask.ok()) return mask.status();
  out.cipher_public_key = *cipher;
  out.mask_public_key = *mask;
  out.certificate_pem = advertisement.certificate_pem();
  out.signature = advertisement.signature();
  return out;
}

v1::SecAggSealedShares ToProto(const SealedShares& shares) {
  v1::SecAggSealedShares out;
  out.set_from(shares.from);
  out.set_to(shares.to);
  out.set_sealed(shares.sealed);
  return out;
}

SealedShares FromProto(const v1::SecAggSealedShares& shares) { return {shares.from(), shares.to(), shares.sealed()}; }

v1::SecAggUnmaskResponse ToProto(const UnmaskResponse& response) {
  v1::SecAggUnmaskResponse out;
  out.set_from(response.from);
  for (const RevealedShare& s : response.self_mask_shares) *out.add_self_mask_shares() = ToProto(s);
  for (const RevealedShare& s : response.mask_key_shares) *out.add_mask_key_shares() = ToProto(s);
  return out;
}

absl::StatusOr<UnmaskResponse> FromProto(const v1::SecAggUnmaskResponse& response) {
  UnmaskResponse out;
  out.from = response.from();
  for (const v1::SecAggRevealedShare& s : response.self_mask_shares()) {
    absl::StatusOr<RevealedShare> share = FromProto(s);
    if (!share.ok()) return share.status();
    out.self_mask_shares.push_back(*std::move(share));
  }
  for (const v1::SecAggRevealedShare& s : response.mask_key_shares()) {
    absl::StatusOr<RevealedShare> share = FromProto(s);
    if (!share.ok()) return share.status();
    out.mask_key_shares.push_back(*std::move(share));
  }
  return out;
}

void SetUnmaskRequest(const UnmaskRequest& request, v1::SecAggResponse* response) {
  for (const std::string& s : request.survivors) response->add_survivors(s);
  for (const std::string& s : request.dropped) response->add_dropped(s);
}

UnmaskRequest UnmaskRequestOf(const v1::SecAggResponse& response) {
  UnmaskRequest out;
  out.survivors.assign(response.survivors().begin(), response.survivors().end());
  out.dropped.assign(response.dropped().begin(), response.dropped().end());
  return out;
}

}  // namespace fedprllm::secagg
