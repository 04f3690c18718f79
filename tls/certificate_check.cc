// Certificate summaries, the soon-to-expire warning and the preflight's certificate line.
#include "tls/certificate_check.h"

#include <openssl/x509.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "tls/openssl_util.h"

namespace fedprllm {

using tls_internal::X509Ptr;

namespace {

std::string Where(const std::string& key, const std::string& path) {
  return absl::StrCat("config key '", key, "' (", path, ")");
}

std::string CommonName(const X509* cert) {
  const X509_NAME* subject = X509_get_subject_name(cert);
  const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) return "";
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)), ASN1_STRING_length(data));
}

// Whole days, rounded down; "less than a day" below one.
std::string InDays(absl::Duration left) {
  const int64_t days = absl::ToInt64Hours(left) / 24;
  if (days < 1) return "in less than a day";
  return absl::StrCat("in ", days, days == 1 ? " day" : " days");
}

}  // namespace

std::string FormatUtc(absl::Time time) { return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", time, absl::UTCTimeZone()); }

absl::StatusOr<std::vector<CertificateSummary>> ReadCertificateSummaries(const std::string& path,
                                                                         const std::string& config_key) {
  ASSIGN_OR_RETURN(const std::string pem, tls_internal::ReadPemFile(path, config_key));
  ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, tls_internal::ParseCertificates(pem, Where(config_key, path)));
  std::vector<CertificateSummary> out;
  for (const X509Ptr& cert : certs) {
    CertificateSummary s;
    s.subject = tls_internal::SubjectText(cert.get());
    s.common_name = CommonName(cert.get());
    s.names = tls_internal::CertificateNames(cert.get());
    s.not_before = tls_internal::Asn1ToTime(X509_get0_notBefore(cert.get()));
    s.not_after = tls_internal::Asn1ToTime(X509_get0_notAfter(cert.get()));
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ExpiringCertificates(const TlsFiles& files, absl::Time now,
                                                              absl::Duration within) {
  std::vector<std::string> out;
  const std::pair<std::string, std::string> inputs[] = {{"tls.cert", files.cert}, {"tls.ca", files.ca}};
  for (const auto& [key, path] : inputs) {
    ASSIGN_OR_RETURN(std::vector<CertificateSummary> certs, ReadCertificateSummaries(path, key));
    for (const CertificateSummary& c : certs) {
      if (c.not_after < now || c.not_before > now || c.not_after >= now + within) continue;
      out.push_back(absl::StrCat(Where(key, path), ": ", c.subject, " expires ", InDays(c.not_after - now), ", on ",
                                 FormatUtc(c.not_after), " (notAfter)"));
    }
  }
  return out;
}

std::string ReportCertificateCheck(const TlsFiles& files, TlsRole role, CheckReport* report, absl::Time now,
                                   absl::Duration warn_within) {
  constexpr char kName[] = "certificate";
  if (absl::Status s = CheckKeyPair(files, role, now); !s.ok()) {
    report->Fail(kName, s.message());
    return "";
  }
  // CheckKeyPair read and parsed both files, so these succeed unless they changed meanwhile.
  absl::StatusOr<std::vector<CertificateSummary>> leaf = ReadCertificateSummaries(files.cert, "tls.cert");
  absl::StatusOr<std::vector<CertificateSummary>> cas = ReadCertificateSummaries(files.ca, "tls.ca");
  absl::StatusOr<std::vector<std::string>> expiring = ExpiringCertificates(files, now, warn_within);
  for (const absl::Status& s : {leaf.status(), cas.status(), expiring.status()}) {
    if (!s.ok()) {
      report->Fail(kName, s.message());
      return "";
    }
  }
  const CertificateSummary& mine = leaf->front();
  std::string identity = mine.common_name;
  if (identity.empty() && !mine.names.empty()) identity = mine.names.front();
  if (!expiring->empty()) {
    report->Warn(kName, absl::StrCat(absl::StrJoin(*expiring, "; "), "; renew before then (deploy/make_certs.sh)"));
    return identity;
  }
  std::vector<std::string> ca_subjects;
  for (const CertificateSummary& c : *cas) ca_subjects.push_back(c.subject);
  report->Ok(kName, absl::StrCat(files.cert, " (", mine.subject, ", names [", absl::StrJoin(mine.names, ", "),
                                 "], valid until ", FormatUtc(mine.not_after), ") matches ", files.key,
                                 " and verifies against ", files.ca, " (", absl::StrJoin(ca_subjects, "; "),
                                 ") as a TLS ", role == TlsRole::kServer ? "server" : "client", " certificate"));
  return identity;
}

}  // namespace fedprllm
