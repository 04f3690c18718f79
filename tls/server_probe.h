// A one-shot TLS probe of fedprllm-server, for telling a client's permanent TLS problems
// (wrong CA, wrong server name, a certificate the server refuses) from a network that is
// down. gRPC reports all of these as UNAVAILABLE ("Socket closed", "failed to connect to all
// addresses"), so the client runs this probe when an RPC fails UNAVAILABLE.
//
//   absl::Status s = ProbeServer(config.server_address, config.server_name, files);
//   if (!s.ok() && s.code() != absl::StatusCode::kUnavailable) return s;  // permanent
#pragma once

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tls/key_pair_check.h"

namespace fedprllm {

// Connects to `address` ("host:port", "[v6]:port", optionally "dns:///"-prefixed) and runs
// the TLS handshake gRPC would: TLS 1.2+, ALPN "h2", this site's certificate and key from
// `files`, the server's certificate verified against files.ca and against `server_name`
// (or, when empty, the host of `address`; an IP literal is matched against IP SANs). After
// the handshake it sends the HTTP/2 client preface and waits for the server's first bytes,
// because a TLS 1.3 server checks the client's certificate only after the client has
// finished its side of the handshake. Everything, connect included, runs within `timeout`.
// Blocks the calling thread; opens and closes one socket; no signals (SIGPIPE) are raised.
//
// Returns
//  * OK: the server accepted this site's certificate and answered in HTTP/2;
//  * UNAVAILABLE: nothing permanent found (cannot resolve or connect, timed out, connection
//    dropped during the handshake); the message says which;
//  * FAILED_PRECONDITION, with the cause in words: the server's certificate is not trusted
//    by files.ca; it does not carry the expected name (the message lists the names it
//    has); the server refused this site's certificate (alert text, or a close right after
//    the handshake); the server does not speak TLS or not HTTP/2. The message includes
//    this side's local address, which is the peer address in the server's log.
//  * the errors of reading files (NOT_FOUND, INVALID_ARGUMENT) as CheckKeyPair words them.
absl::Status ProbeServer(const std::string& address, const std::string& server_name, const TlsFiles& files,
                         absl::Duration timeout = absl::Seconds(5));

// For a client whose RPCs fail UNAVAILABLE: runs ProbeServer at most once per `interval`,
// and reports a permanent finding only when a second probe `confirm_after` later agrees
// (a server that is shutting down may close one connection right after its handshake).
// A permanent finding is sticky. Thread-safe; a call made while another thread probes, or
// within `interval` of the last probe, returns at once with the last result.
//
//   UnavailableDiagnosis diagnosis(config.server_address, config.server_name, files);
//   std::string seen;
//   RETURN_IF_ERROR(diagnosis.Diagnose(&seen));  // else retry; `seen` says what the probe saw
class UnavailableDiagnosis {
 public:
  UnavailableDiagnosis(std::string address, std::string server_name, TlsFiles files,
                       absl::Duration interval = absl::Seconds(5), absl::Duration confirm_after = absl::Seconds(1));

  // OK if nothing permanent was found; `*seen` is then what the latest probe saw ("" before
  // the first). Otherwise the permanent error (FAILED_PRECONDITION, NOT_FOUND, ...).
  absl::Status Diagnose(std::string* seen);

 private:
  const std::string address_;
  const std::string server_name_;
  const TlsFiles files_;
  const absl::Duration interval_;
  const absl::Duration confirm_after_;
  absl::Mutex mu_;
  bool probing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_probe_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_seen_ ABSL_GUARDED_BY(mu_);
  absl::Status permanent_ ABSL_GUARDED_BY(mu_);
};

// Host and port of a gRPC target as accepted by ProbeServer; INVALID_ARGUMENT otherwise.
absl::Status SplitHostPort(const std::string& address, std::string* host, std::string* port);

}  // namespace fedprllm
