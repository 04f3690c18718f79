// AccessPolicy: the role lists and the CRL, swapped as a whole on reload.
#include "server/access_policy.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/peer_identity.h"

namespace fedprllm {

bool IsReadOnlyAdminMethod(absl::string_view method) {
  for (const char* rpc : {"ListJobs", "GetJobStatus", "ListSites", "StreamJobLog"}) {
    if (method == absl::StrCat("/fedprllm.v1.FedPrLLMAdmin/", rpc)) return true;
  }
  return false;
}

absl::Status AccessPolicy::Reload(const ServerConfig& config) {
  RevocationList crl;
  if (!config.tls.crl.empty()) {
    ASSIGN_OR_RETURN(crl, LoadRevocationList(config.tls.crl, config.tls.ca));
  }
  absl::MutexLock lock(&mu_);
  sites_ = std::set<std::string>(config.allowed_clients.begin(), config.allowed_clients.end());
  admins_ = std::set<std::string>(config.admins.begin(), config.admins.end());
  monitors_ = std::set<std::string>(config.monitors.begin(), config.monitors.end());
  crl_ = std::move(crl);
  has_crl_ = !config.tls.crl.empty();
  return absl::OkStatus();
}

std::optional<std::string> AccessPolicy::Site(const std::vector<std::string>& names) const {
  absl::MutexLock lock(&mu_);
  return MatchAllowlist(names, sites_);
}

std::optional<std::string> AccessPolicy::Admin(const std::vector<std::string>& names) const {
  absl::MutexLock lock(&mu_);
  return MatchAllowlist(names, admins_);
}

std::optional<std::string> AccessPolicy::Monitor(const std::vector<std::string>& names) const {
  absl::MutexLock lock(&mu_);
  return MatchAllowlist(names, monitors_);
}

bool AccessPolicy::IsSite(const std::string& identity) const {
  absl::MutexLock lock(&mu_);
  return sites_.count(identity) != 0;
}

bool AccessPolicy::Revoked(const std::string& peer_pem) const {
  {
    absl::MutexLock lock(&mu_);
    if (crl_.serials.empty()) return false;
  }
  const std::string serial = CertificateSerialHex(peer_pem);
  absl::MutexLock lock(&mu_);
  return crl_.Revokes(serial);
}

std::string AccessPolicy::Describe() const {
  absl::MutexLock lock(&mu_);
  std::string out = absl::StrCat(sites_.size(), " sites, ", admins_.size(), " operators, ",
                                 monitors_.size(), " monitors");
  if (has_crl_) {
    absl::StrAppend(&out, ", ", crl_.serials.size(), " revoked certificates (CRL next update ",
                    crl_.next_update == absl::InfiniteFuture()
                        ? std::string("none")
                        : absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", crl_.next_update, absl::UTCTimeZone()),
                    ")");
  }
  return out;
}

}  // namespace fedprllm
