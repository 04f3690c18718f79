// What a daemon's certificate files say about themselves (subject, names, validity), which
// of them expire soon, and the "certificate" line of `fedprllm-client check` and
// `fedprllm-server check`.
//
//   TlsFiles files{config.tls.cert, config.tls.key, config.tls.ca};
//   CheckReport report(stdout);
//   std::string identity = ReportCertificateCheck(files, TlsRole::kClient, &report);
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/check_report.h"
#include "tls/key_pair_check.h"

namespace fedprllm {

// A certificate that expires within this long of the check is reported as a warning.
inline constexpr absl::Duration kCertificateWarningPeriod = absl::Hours(24 * 30);

struct CertificateSummary {
  std::string subject;             // RFC 2253, e.g. "CN=site-a"
  std::string common_name;         // the subject CN; "" if it has none
  std::vector<std::string> names;  // CN, then SAN DNS names and IP addresses, without repeats
  absl::Time not_before;           // InfinitePast if unreadable
  absl::Time not_after;            // InfinitePast if unreadable
};

// Every certificate in the PEM file `path` (leaf first for a chain file). Errors as
// CheckKeyPair words them, naming `config_key` ("tls.cert") and the path.
absl::StatusOr<std::vector<CertificateSummary>> ReadCertificateSummaries(const std::string& path,
                                                                         const std::string& config_key);

// Each certificate of files.cert and files.ca that is valid at `now` but whose notAfter is
// before now + `within`, one text each: "config key 'tls.ca' (certs/ca.crt): CN=FedPrLLM CA
// expires in 12 days, on 2026-01-01 00:00:00 UTC (notAfter)". Empty if none. Errors if a file
// cannot be read or parsed (as ReadCertificateSummaries).
absl::StatusOr<std::vector<std::string>> ExpiringCertificates(const TlsFiles& files, absl::Time now,
                                                              absl::Duration within = kCertificateWarningPeriod);

// Adds one line named "certificate" to `report`: FAIL with CheckKeyPair's message (which
// names the file and, for an expired certificate, its notAfter date) if the files are
// unusable at `now`; else warn naming each certificate of ExpiringCertificates; else ok with
// the subject, its names, its notAfter, and the key and CA files it was checked against.
// Returns the certificate's identity (its subject CN, else its first name) when the line is
// not FAIL, otherwise "".
std::string ReportCertificateCheck(const TlsFiles& files, TlsRole role, CheckReport* report,
                                   absl::Time now = absl::Now(),
                                   absl::Duration warn_within = kCertificateWarningPeriod);

// "2026-01-01 00:00:00 UTC".
std::string FormatUtc(absl::Time time);

}  // namespace fedprllm
