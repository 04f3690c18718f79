// Startup checks of a daemon's mutual-TLS files, so that a bad certificate or key is
// reported as such (which file, what is wrong) instead of surfacing later as gRPC's
// "cannot listen" or an endless UNAVAILABLE.
//
//   TlsFiles files{config.tls.cert, config.tls.key, config.tls.ca};
//   RETURN_IF_ERROR(CheckKeyPair(files, TlsRole::kServer));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fedprllm {

// Paths of the PEM files of one daemon (config keys tls.cert, tls.key, tls.ca).
struct TlsFiles {
  std::string cert;  // this daemon's certificate, optionally followed by intermediates
  std::string key;   // its private key, unencrypted
  std::string ca;    // the federation CA (one or more certificates)
};

// Which side of the handshake the certificate is for; sets the extended key usage the
// chain check requires (TLS server or TLS client authentication).
enum class TlsRole { kServer, kClient };

// OK if, at time `now`:
//  * tls.cert, tls.key and tls.ca are readable, non-empty PEM (certificates; a private key);
//  * the key belongs to the first certificate of tls.cert;
//  * that certificate is inside its validity period;
//  * it verifies against the CA certificates in tls.ca (with any intermediates that follow
//    it in tls.cert), for `role`'s key usage.
// Otherwise an error whose message names the config key, the path and what is wrong
// (NOT_FOUND: unreadable file; INVALID_ARGUMENT: not PEM, or key and certificate do not
// match; FAILED_PRECONDITION: expired, not yet valid, not signed by the CA, wrong usage).
// Federation CAs sign both the server's and the sites' certificates (round_protocol.md §1),
// so both roles check their own chain against their own tls.ca.
absl::Status CheckKeyPair(const TlsFiles& files, TlsRole role, absl::Time now = absl::Now());

}  // namespace fedprllm
