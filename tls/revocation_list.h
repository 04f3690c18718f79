// Certificate revocation for the server: a CRL file (PEM, as `fedprllm-certs revoke` writes
// it) checked against the federation CA, and the serial numbers it revokes. The server
// refuses every call whose peer certificate's serial is listed (server/access_policy.h),
// also on connections opened before the revocation.
//
//   ASSIGN_OR_RETURN(RevocationList crl, LoadRevocationList(config.tls.crl, config.tls.ca));
//   if (crl.Revokes(CertificateSerialHex(peer_pem))) ...refuse...
#pragma once

#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fedprllm {

struct RevocationList {
  std::set<std::string> serials;  // upper-case hex, no leading zeros
  absl::Time next_update = absl::InfiniteFuture();
  bool Revokes(const std::string& serial_hex) const { return serials.count(serial_hex) != 0; }
};

// Reads the PEM CRL at `crl_path` and checks that the CA certificate at `ca_path` signed
// it. Errors name config key 'tls.crl': NOT_FOUND, INVALID_ARGUMENT (not a CRL, or not
// signed by that CA). A CRL past its next update is still used; the caller warns.
absl::StatusOr<RevocationList> LoadRevocationList(const std::string& crl_path, const std::string& ca_path);

// The serial number of the first certificate in `pem`, as RevocationList stores them; ""
// if it cannot be read.
std::string CertificateSerialHex(const std::string& pem);

// The notAfter of the first certificate in `pem`; InfiniteFuture if it cannot be read.
absl::Time CertificateNotAfter(const std::string& pem);

}  // namespace fedprllm
