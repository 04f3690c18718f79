// The client identities (certificate CN and DNS SANs) of an mTLS peer.
#include "server/peer_identity.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedprllm {

std::vector<std::string> PeerCertificateNames(const grpc::AuthContext& context) {
  std::vector<std::string> names;
  auto add = [&](const char* property) {
    for (const grpc::string_ref& value : context.FindPropertyValues(property)) {
      std::string name(value.data(), value.size());
      bool seen = false;
      for (const std::string& n : names) seen = seen || n == name;
      if (!seen && !name.empty()) names.push_back(std::move(name));
    }
  };
  add("x509_common_name");
  add("x509_subject_alternative_name");
  return names;
}

std::optional<std::string> MatchAllowlist(const std::vector<std::string>& names,
                                          const std::set<std::string>& allowlist) {
  for (const std::string& name : names) {
    if (allowlist.count(name) != 0) return name;
  }
  return std::nullopt;
}

std::string DescribeNames(const std::vector<std::string>& names) {
  if (names.empty()) return "no certificate names";
  return absl::StrCat("certificate names [", absl::StrJoin(names, ", "), "]");
}

}  // namespace fedprllm
