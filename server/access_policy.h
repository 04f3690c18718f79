// AccessPolicy: who may call the server right now. The identities of the three roles (sites
// on allowed_clients, operators on admins, monitors on monitors) and the certificates the federation CA revoked
// (tls.crl). The admission (server/transport_limits.h) and both services ask it on every
// call, so a SIGHUP that reloads it (Reload) takes effect on the next call, also on
// connections opened before. Thread-safe.
//
//   auto policy = std::make_shared<AccessPolicy>();
//   RETURN_IF_ERROR(policy->Reload(config));          // at start and on SIGHUP
//   if (auto site = policy->Site(names)) ...
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/server_config.h"
#include "tls/revocation_list.h"

namespace fedprllm {

// Whether `method` (a call's :path) is one of the admin API's read-only RPCs (ListJobs,
// GetJobStatus, ListSites, StreamJobLog), which monitors may call as well as operators.
bool IsReadOnlyAdminMethod(absl::string_view method);

class AccessPolicy {
 public:
  // Takes allowed_clients, admins, monitors and, when tls.crl is set, the CRL (checked against
  // tls.ca). On an error nothing changes.
  absl::Status Reload(const ServerConfig& config);

  // The first of `names` on allowed_clients / admins, or nullopt.
  std::optional<std::string> Site(const std::vector<std::string>& names) const;
  std::optional<std::string> Admin(const std::vector<std::string>& names) const;
  // The first of `names` on monitors, or nullopt.
  std::optional<std::string> Monitor(const std::vector<std::string>& names) const;
  bool IsSite(const std::string& identity) const;
  // Whether the certificate in `peer_pem` is revoked by the loaded CRL.
  bool Revoked(const std::string& peer_pem) const;
  // "3 sites, 1 operator, 2 revoked certificates (CRL next update 2027-01-01 00:00:00 UTC)"
  std::string Describe() const;

 private:
  mutable absl::Mutex mu_;
  std::set<std::string> sites_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> admins_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> monitors_ ABSL_GUARDED_BY(mu_);
  RevocationList crl_ ABSL_GUARDED_BY(mu_);
  bool has_crl_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fedprllm
