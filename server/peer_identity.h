// Client identity from the mutual-TLS handshake. gRPC has already verified the client's
// certificate chain against the federation CA; this reads the verified certificate's names
// and matches them against the allowlist. Message fields never carry identity.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/security/auth_context.h>

namespace fedprllm {

// The peer certificate's subject CN first, then its SAN entries, as gRPC's TLS
// transport exposes them (x509_common_name, x509_subject_alternative_name). Empty without
// TLS or a client certificate.
std::vector<std::string> PeerCertificateNames(const grpc::AuthContext& context);

// The first of `names` that is in `allowlist`, or nullopt.
std::optional<std::string> MatchAllowlist(const std::vector<std::string>& names,
                                          const std::set<std::string>& allowlist);

// "CN=site-a, SAN=[site-a]" style text for log lines about a refused peer.
std::string DescribeNames(const std::vector<std::string>& names);

}  // namespace fedprllm
