// The two roles of the secure sum of docs/secure_aggregation.md, as in-memory messages:
// SecAggSite (one per site) and SecAggServer (the relay that learns only the sum). Whatever
// transport carries the messages, the server's Sum() equals the plain sum of the surviving
// sites' vectors modulo 2^64.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "secagg/crypto.h"
#include "secagg/shamir.h"

namespace fedprllm::secagg {

// What every party agrees on before the first message.
struct SessionConfig {
  std::string job_id;
  int round = 0;
  // The admitted sites; a site's Shamir evaluation point is its 1-based position.
  std::vector<std::string> sites;
  int threshold = 0;  // 2 <= threshold <= sites.size()
  size_t length = 0;  // words per vector

  // "fedprllm-secagg-v1\0<job_id>\0<round>": bound into every signature, key and AEAD.
  std::string Context() const;
  // 1-based position of `site`, 0 if it is not admitted.
  int IndexOf(const std::string& site) const;
  absl::Status Validate() const;
};

// Step 1: a site's two public keys, signed with its TLS certificate's key.
struct KeyAdvertisement {
  std::string site;
  Key32 cipher_public_key{};
  Key32 mask_public_key{};
  std::string certificate_pem;
  std::string signature;
};
// What the signature covers.
std::string AdvertisementMessage(const SessionConfig& config, const KeyAdvertisement& advertisement);

// Step 2: `from`'s shares of its two secrets for `to`, sealed for `to`.
struct SealedShares {
  std::string from;
  std::string to;
  std::string sealed;
};

// Step 4: the server names the survivors (whose masked inputs arrived) and the dropped.
struct UnmaskRequest {
  std::vector<std::string> survivors;
  std::vector<std::string> dropped;
};
struct RevealedShare {
  std::string owner;  // whose secret this is a share of
  ShamirShare share;
};
struct UnmaskResponse {
  std::string from;
  std::vector<RevealedShare> self_mask_shares;  // one per survivor
  std::vector<RevealedShare> mask_key_shares;   // one per dropped site
};

class SecAggSite {
 public:
  // Draws the site's key pairs. `tls_key_pem` signs its advertisement; `ca_pem` checks the others'.
  static absl::StatusOr<SecAggSite> Create(SessionConfig config, std::string site, std::string tls_key_pem,
                                           std::string tls_cert_pem, std::string ca_pem);

  absl::StatusOr<KeyAdvertisement> Advertise() const;
  // Verifies every advertisement (PERMISSION_DENIED naming the first bad one), keeps the
  // keys, draws the self-mask seed and returns one sealed message per other advertised site.
  absl::StatusOr<std::vector<SealedShares>> ShareKeys(const std::vector<KeyAdvertisement>& advertisements);
  // The sealed shares the server relays to this site; each must open with the pair key.
  absl::Status ReceiveShares(const std::vector<SealedShares>& to_this_site);
  // Step 3: input + self mask + pair masks with every site whose shares this site received.
  absl::StatusOr<std::vector<uint64_t>> MaskInput(absl::Span<const uint64_t> input) const;
  // Step 4, answered once: refuses a request with fewer than `threshold` survivors, a site
  // in both lists, or a site this site holds no shares of.
  absl::StatusOr<UnmaskResponse> Unmask(const UnmaskRequest& request);

  const std::string& site() const { return site_; }

 private:
  SecAggSite() = default;
  struct HeldShares {
    ShamirShare mask_key;
    ShamirShare self_mask;
  };
  SessionConfig config_;
  std::string site_;
  int index_ = 0;
  std::string tls_key_pem_, tls_cert_pem_, ca_pem_;
  X25519KeyPair cipher_keys_, mask_keys_;
  Key32 self_mask_seed_{};
  std::map<std::string, KeyAdvertisement> peers_;  // verified, without this site
  std::map<std::string, HeldShares> held_;         // by owner, with this site's own
  bool answered_ = false;
};

class SecAggServer {
 public:
  explicit SecAggServer(SessionConfig config) : config_(std::move(config)) {}

  absl::Status AddAdvertisement(KeyAdvertisement advertisement);
  // What to relay to every site; FAILED_PRECONDITION below the threshold.
  absl::StatusOr<std::vector<KeyAdvertisement>> Advertisements() const;
  absl::Status AddShares(const std::string& from, std::vector<SealedShares> shares);
  std::vector<SealedShares> SharesFor(const std::string& site) const;
  absl::Status AddMaskedInput(const std::string& from, std::vector<uint64_t> masked);
  // Closes the input step: survivors are the sites whose masked input arrived, dropped the
  // other sites that shared keys. FAILED_PRECONDITION below the threshold.
  absl::StatusOr<UnmaskRequest> CloseInputs();
  absl::Status AddUnmaskResponse(UnmaskResponse response);
  // The survivors' sum modulo 2^64; FAILED_PRECONDITION (how many answers arrived, how many
  // are needed) before `threshold` sites have answered the unmask request.
  absl::StatusOr<std::vector<uint64_t>> Sum() const;

  const std::vector<std::string>& survivors() const { return survivors_; }

 private:
  SessionConfig config_;
  std::map<std::string, KeyAdvertisement> advertisements_;
  std::map<std::string, std::vector<SealedShares>> shares_by_sender_;
  std::map<std::string, std::vector<uint64_t>> masked_inputs_;
  bool inputs_closed_ = false;
  std::vector<std::string> survivors_, dropped_;
  std::vector<UnmaskResponse> responses_;
};

}  // namespace fedprllm::secagg
