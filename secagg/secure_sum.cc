// The secure sum's site and server roles (docs/secure_aggregation.md, steps 1-4).
#include "secagg/secure_sum.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace fedprllm::secagg {
namespace {

constexpr char kShareKeyInfo[] = "share-key";
constexpr char kPairMaskInfo[] = "pair-mask";
constexpr size_t kSharePlaintextBytes = 2 + 32 + 32;

std::string ShareAssociatedData(const SessionConfig& config, const std::string& from, const std::string& to) {
  return absl::StrCat(config.Context(), std::string(1, '\0'), from, std::string(1, '\0'), to);
}

// The sign with which `site` adds its pair mask with `peer`: + toward higher indexes.
int PairSign(const SessionConfig& config, const std::string& site, const std::string& peer) {
  return config.IndexOf(site) < config.IndexOf(peer) ? 1 : -1;
}

}  // namespace

std::string SessionConfig::Context() const {
  return absl::StrCat("fedprllm-secagg-v1", std::string(1, '\0'), job_id, std::string(1, '\0'), round);
}

int SessionConfig::IndexOf(const std::string& site) const {
  const auto it = std::find(sites.begin(), sites.end(), site);
  return it == sites.end() ? 0 : static_cast<int>(it - sites.begin()) + 1;
}

absl::Status SessionConfig::Validate() const {
  if (sites.size() < 3 || sites.size() > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("secure aggregation needs 3 to 255 sites (with 2 the sum reveals the other's vector); got ",
                     sites.size()));
  }
  std::vector<std::string> sorted = sites;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return absl::InvalidArgumentError("secure aggregation: a site is listed twice");
  }
  if (threshold < 2 || threshold > static_cast<int>(sites.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("secure aggregation threshold ", threshold, " must be between 2 and ", sites.size()));
  }
  if (length == 0) return absl::InvalidArgumentError("secure aggregation of empty vectors");
  return absl::OkStatus();
}

std::string AdvertisementMessage(const SessionConfig& config, const KeyAdvertisement& advertisement) {
  std::string message = absl::StrCat(config.Context(), std::string(1, '\0'), advertisement.site, std::string(1, '\0'));
  message.append(advertisement.cipher_public_key.begin(), advertisement.cipher_public_key.end());
  message.append(advertisement.mask_public_key.begin(), advertisement.mask_public_key.end());
  return message;
}

// ---------------------------------------------------------------------------------------
// Site

absl::StatusOr<SecAggSite> SecAggSite::Create(SessionConfig config, std::string site, std::string tls_key_pem,
                                              std::string tls_cert_pem, std::string ca_pem) {
  RETURN_IF_ERROR(config.Validate());
  SecAggSite out;
  out.index_ = config.IndexOf(site);
  if (out.index_ == 0) return absl::InvalidArgumentError(absl::StrCat("site '", site, "' is not in the aggregation"));
  out.config_ = std::move(config);
  out.site_ = std::move(site);
  out.tls_key_pem_ = std::move(tls_key_pem);
  out.tls_cert_pem_ = std::move(tls_cert_pem);
  out.ca_pem_ = std::move(ca_pem);
  ASSIGN_OR_RETURN(out.cipher_keys_, GenerateX25519KeyPair());
  ASSIGN_OR_RETURN(out.mask_keys_, GenerateX25519KeyPair());
  return out;
}

absl::StatusOr<KeyAdvertisement> SecAggSite::Advertise() const {
  KeyAdvertisement advertisement;
  advertisement.site = site_;
  advertisement.cipher_public_key = cipher_keys_.public_key;
  advertisement.mask_public_key = mask_keys_.public_key;
  advertisement.certificate_pem = tls_cert_pem_;
  ASSIGN_OR_RETURN(advertisement.signature, SignMessage(tls_key_pem_, AdvertisementMessage(config_, advertisement)));
  return advertisement;
}

absl::StatusOr<std::vector<SealedShares>> SecAggSite::ShareKeys(const std::vector<KeyAdvertisement>& advertisements) {
  peers_.clear();
  held_.clear();
  for (const KeyAdvertisement& advertisement : advertisements) {
    if (config_.IndexOf(advertisement.site) == 0) {
      return absl::PermissionDeniedError(absl::StrCat("a key advertisement names '", advertisement.site,
                                                      "', which is not in the aggregation"));
    }
    if (advertisement.site == site_) {
      if (advertisement.cipher_public_key != cipher_keys_.public_key ||
          advertisement.mask_public_key != mask_keys_.public_key) {
        return absl::PermissionDeniedError(
            absl::StrCat("the server relayed keys for this site ('", site_, "') that are not its own"));
      }
      continue;
    }
    if (peers_.count(advertisement.site) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("site '", advertisement.site, "' is advertised twice"));
    }
    RETURN_IF_ERROR(VerifySiteSignature(ca_pem_, advertisement.certificate_pem, advertisement.site,
                                        AdvertisementMessage(config_, advertisement), advertisement.signature));
    peers_[advertisement.site] = advertisement;
  }
  if (static_cast<int>(peers_.size()) + 1 < config_.threshold) {
    return absl::FailedPreconditionError(absl::StrCat("only ", peers_.size() + 1, " sites advertised keys; the threshold is ",
                                                      config_.threshold));
  }
  ASSIGN_OR_RETURN(self_mask_seed_, RandomKey());
  const int count = static_cast<int>(config_.sites.size());
  ASSIGN_OR_RETURN(std::vector<ShamirShare> key_shares, ShamirSplit(mask_keys_.private_key, count, config_.threshold));
  ASSIGN_OR_RETURN(std::vector<ShamirShare> seed_shares, ShamirSplit(self_mask_seed_, count, config_.threshold));
  held_[site_] = HeldShares{key_shares[index_ - 1], seed_shares[index_ - 1]};
  std::vector<SealedShares> out;
  for (const auto& [peer, advertisement] : peers_) {
    const int peer_index = config_.IndexOf(peer);
    std::string plaintext;
    plaintext.push_back(static_cast<char>(index_));
    plaintext.push_back(static_cast<char>(peer_index));
    const ShamirShare& key_share = key_shares[peer_index - 1];
    const ShamirShare& seed_share = seed_shares[peer_index - 1];
    plaintext.append(key_share.y.begin(), key_share.y.end());
    plaintext.append(seed_share.y.begin(), seed_share.y.end());
    ASSIGN_OR_RETURN(const Key32 key, DeriveSharedKey(cipher_keys_.private_key, advertisement.cipher_public_key,
                                                      config_.Context(), kShareKeyInfo));
    ASSIGN_OR_RETURN(std::string sealed, Seal(key, ShareAssociatedData(config_, site_, peer), plaintext));
    out.push_back(SealedShares{site_, peer, std::move(sealed)});
  }
  return out;
}

absl::Status SecAggSite::ReceiveShares(const std::vector<SealedShares>& to_this_site) {
  for (const SealedShares& message : to_this_site) {
    const auto peer = peers_.find(message.from);
    if (message.to != site_ || peer == peers_.end()) {
      return absl::PermissionDeniedError(
          absl::StrCat("site '", site_, "' was given shares from '", message.from, "' for '", message.to, "'"));
    }
    if (held_.count(message.from) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("shares from '", message.from, "' arrived twice"));
    }
    ASSIGN_OR_RETURN(const Key32 key, DeriveSharedKey(cipher_keys_.private_key, peer->second.cipher_public_key,
                                                      config_.Context(), kShareKeyInfo));
    absl::StatusOr<std::string> plaintext = Open(key, ShareAssociatedData(config_, message.from, site_), message.sealed);
    if (!plaintext.ok()) {
      return absl::PermissionDeniedError(absl::StrCat("shares from '", message.from, "': ", plaintext.status().message()));
    }
    if (plaintext->size() != kSharePlaintextBytes ||
        static_cast<uint8_t>((*plaintext)[0]) != config_.IndexOf(message.from) ||
        static_cast<uint8_t>((*plaintext)[1]) != index_) {
      return absl::PermissionDeniedError(absl::StrCat("shares from '", message.from, "' are malformed"));
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(plaintext->data());
    HeldShares held;
    held.mask_key.x = held.self_mask.x = static_cast<uint8_t>(index_);
    held.mask_key.y.assign(bytes + 2, bytes + 34);
    held.self_mask.y.assign(bytes + 34, bytes + 66);
    held_[message.from] = std::move(held);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> SecAggSite::MaskInput(absl::Span<const uint64_t> input) const {
  if (input.size() != config_.length) {
    return absl::InvalidArgumentError(
        absl::StrCat("a secure-sum input has ", input.size(), " words; the aggregation sums ", config_.length));
  }
  if (held_.count(site_) == 0) return absl::FailedPreconditionError("MaskInput before ShareKeys");
  std::vector<uint64_t> out(input.begin(), input.end());
  RETURN_IF_ERROR(ApplyMaskStream(self_mask_seed_, 1, absl::MakeSpan(out)));
  for (const auto& [peer, held] : held_) {
    if (peer == site_) continue;
    ASSIGN_OR_RETURN(const Key32 seed, DeriveSharedKey(mask_keys_.private_key, peers_.at(peer).mask_public_key,
                                                       config_.Context(), kPairMaskInfo));
    RETURN_IF_ERROR(ApplyMaskStream(seed, PairSign(config_, site_, peer), absl::MakeSpan(out)));
  }
  return out;
}

absl::StatusOr<UnmaskResponse> SecAggSite::Unmask(const UnmaskRequest& request) {
  if (answered_) return absl::FailedPreconditionError("this site has already answered an unmask request");
  if (static_cast<int>(request.survivors.size()) < config_.threshold) {
    return absl::FailedPreconditionError(absl::StrCat("the unmask request names ", request.survivors.size(),
                                                      " survivors; the threshold is ", config_.threshold));
  }
  const std::set<std::string> survivors(request.survivors.begin(), request.survivors.end());
  if (survivors.size() != request.survivors.size() || survivors.count(site_) == 0) {
    return absl::PermissionDeniedError("the unmask request's survivors repeat a site or leave this one out");
  }
  UnmaskResponse response;
  response.from = site_;
  for (const std::string& dropped : request.dropped) {
    if (survivors.count(dropped) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("the unmask request names '", dropped, "' both as a survivor and as dropped"));
    }
  }
  for (const std::string& survivor : request.survivors) {
    const auto held = held_.find(survivor);
    if (held == held_.end()) return absl::PermissionDeniedError(absl::StrCat("no shares are held of '", survivor, "'"));
    response.self_mask_shares.push_back(RevealedShare{survivor, held->second.self_mask});
  }
  for (const std::string& dropped : request.dropped) {
    const auto held = held_.find(dropped);
    if (held == held_.end()) return absl::PermissionDeniedError(absl::StrCat("no shares are held of '", dropped, "'"));
    response.mask_key_shares.push_back(RevealedShare{dropped, held->second.mask_key});
  }
  answered_ = true;
  return response;
}

// ---------------------------------------------------------------------------------------
// Server

absl::Status SecAggServer::AddAdvertisement(KeyAdvertisement advertisement) {
  if (config_.IndexOf(advertisement.site) == 0) {
    return absl::PermissionDeniedError(absl::StrCat("site '", advertisement.site, "' is not in the aggregation"));
  }
  if (!shares_by_sender_.empty()) return absl::FailedPreconditionError("key advertisements are closed");
  if (!advertisements_.emplace(advertisement.site, advertisement).second) {
    return absl::AlreadyExistsError(absl::StrCat("site '", advertisement.site, "' advertised twice"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<KeyAdvertisement>> SecAggServer::Advertisements() const {
  if (static_cast<int>(advertisements_.size()) < config_.threshold) {
    return absl::FailedPreconditionError(absl::StrCat(advertisements_.size(), " sites advertised keys; ",
                                                      config_.threshold, " are needed"));
  }
  std::vector<KeyAdvertisement> out;
  for (const auto& [site, advertisement] : advertisements_) out.push_back(advertisement);
  return out;
}

absl::Status SecAggServer::AddShares(const std::string& from, std::vector<SealedShares> shares) {
  if (advertisements_.count(from) == 0) {
    return absl::PermissionDeniedError(absl::StrCat("site '", from, "' shares keys it did not advertise"));
  }
  if (!masked_inputs_.empty()) return absl::FailedPreconditionError("key sharing is closed");
  for (const SealedShares& share : shares) {
    if (share.from != from || advertisements_.count(share.to) == 0) {
      return absl::PermissionDeniedError(absl::StrCat("site '", from, "' sent shares from '", share.from, "' for '",
                                                      share.to, "'"));
    }
  }
  if (!shares_by_sender_.emplace(from, std::move(shares)).second) {
    return absl::AlreadyExistsError(absl::StrCat("site '", from, "' shared keys twice"));
  }
  return absl::OkStatus();
}

std::vector<SealedShares> SecAggServer::SharesFor(const std::string& site) const {
  std::vector<SealedShares> out;
  for (const auto& [from, shares] : shares_by_sender_) {
    for (const SealedShares& share : shares) {
      if (share.to == site) out.push_back(share);
    }
  }
  return out;
}

absl::Status SecAggServer::AddMaskedInput(const std::string& from, std::vector<uint64_t> masked) {
  if (inputs_closed_) return absl::FailedPreconditionError(absl::StrCat("the masked input of '", from, "' is too late"));
  if (shares_by_sender_.count(from) == 0) {
    return absl::PermissionDeniedError(absl::StrCat("site '", from, "' sends a masked input without having shared keys"));
  }
  if (masked.size() != config_.length) {
    return absl::InvalidArgumentError(absl::StrCat("the masked input of '", from, "' has ", masked.size(),
                                                   " words; the aggregation sums ", config_.length));
  }
  if (!masked_inputs_.emplace(from, std::move(masked)).second) {
    return absl::AlreadyExistsError(absl::StrCat("site '", from, "' sent its masked input twice"));
  }
  return absl::OkStatus();
}

absl::StatusOr<UnmaskRequest> SecAggServer::CloseInputs() {
  if (static_cast<int>(masked_inputs_.size()) < config_.threshold) {
    return absl::FailedPreconditionError(absl::StrCat(masked_inputs_.size(), " sites sent masked inputs; ",
                                                      config_.threshold, " are needed"));
  }
  inputs_closed_ = true;
  survivors_.clear();
  dropped_.clear();
  for (const auto& [site, shares] : shares_by_sender_) {
    (masked_inputs_.count(site) != 0 ? survivors_ : dropped_).push_back(site);
  }
  return UnmaskRequest{survivors_, dropped_};
}

absl::Status SecAggServer::AddUnmaskResponse(UnmaskResponse response) {
  if (!inputs_closed_) return absl::FailedPreconditionError("an unmask response before the unmask request");
  if (std::find(survivors_.begin(), survivors_.end(), response.from) == survivors_.end()) {
    return absl::PermissionDeniedError(absl::StrCat("site '", response.from, "' is not a survivor"));
  }
  for (const UnmaskResponse& earlier : responses_) {
    if (earlier.from == response.from) {
      return absl::AlreadyExistsError(absl::StrCat("site '", response.from, "' answered twice"));
    }
  }
  if (response.self_mask_shares.size() != survivors_.size() || response.mask_key_shares.size() != dropped_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the unmask response of '", response.from, "' has the wrong shares"));
  }
  responses_.push_back(std::move(response));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> SecAggServer::Sum() const {
  if (!inputs_closed_) return absl::FailedPreconditionError("the inputs are not closed");
  if (static_cast<int>(responses_.size()) < config_.threshold) {
    return absl::FailedPreconditionError(absl::StrCat("unmasking has ", responses_.size(), " answers of the ",
                                                      survivors_.size(), " survivors and needs ", config_.threshold,
                                                      " (the threshold); the sum cannot be recovered"));
  }
  // owner -> the shares of one of its secrets that the answers revealed
  const auto shares_of = [&](const std::string& owner, bool self_mask) {
    std::vector<ShamirShare> out;
    for (const UnmaskResponse& response : responses_) {
      for (const RevealedShare& revealed : self_mask ? response.self_mask_shares : response.mask_key_shares) {
        if (revealed.owner == owner) out.push_back(revealed.share);
      }
    }
    return out;
  };
  std::vector<uint64_t> sum(config_.length, 0);
  for (const std::string& survivor : survivors_) {
    const std::vector<uint64_t>& masked = masked_inputs_.at(survivor);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += masked[i];
    ASSIGN_OR_RETURN(std::vector<uint8_t> seed_bytes, ShamirCombine(shares_of(survivor, true), config_.threshold));
    if (seed_bytes.size() != 32) return absl::DataLossError(absl::StrCat("the self-mask seed of '", survivor, "' is malformed"));
    Key32 seed{};
    std::copy(seed_bytes.begin(), seed_bytes.end(), seed.begin());
    RETURN_IF_ERROR(ApplyMaskStream(seed, -1, absl::MakeSpan(sum)));
  }
  for (const std::string& dropped : dropped_) {
    ASSIGN_OR_RETURN(std::vector<uint8_t> key_bytes, ShamirCombine(shares_of(dropped, false), config_.threshold));
    if (key_bytes.size() != 32) return absl::DataLossError(absl::StrCat("the mask key of '", dropped, "' is malformed"));
    Key32 mask_key{};
    std::copy(key_bytes.begin(), key_bytes.end(), mask_key.begin());
    ASSIGN_OR_RETURN(const Key32 public_key, X25519PublicKey(mask_key));
    if (public_key != advertisements_.at(dropped).mask_public_key) {
      return absl::DataLossError(
          absl::StrCat("the shares of the mask key of dropped site '", dropped, "' do not recover its advertised key"));
    }
    for (const std::string& survivor : survivors_) {
      ASSIGN_OR_RETURN(const Key32 seed, DeriveSharedKey(mask_key, advertisements_.at(survivor).mask_public_key,
                                                         config_.Context(), kPairMaskInfo));
      RETURN_IF_ERROR(ApplyMaskStream(seed, -PairSign(config_, survivor, dropped), absl::MakeSpan(sum)));
    }
  }
  return sum;
}

}  // namespace fedprllm::secagg
