// OpenSSL helpers of fedprllm::tls: error text, PEM parsing, certificate descriptions.
#include "tls/openssl_util.h"

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fedprllm::tls_internal {

std::string DrainOpenSslErrors() {
  std::vector<std::string> reasons;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    std::string text = reason != nullptr ? reason : absl::StrFormat("error %lx", e);
    bool seen = false;
    for (const std::string& r : reasons) seen = seen || r == text;
    if (!seen) reasons.push_back(std::move(text));
  }
  return absl::StrJoin(reasons, "; ");
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& config_key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("config key '", config_key, "': cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", config_key, "': ", path, " is empty"));
  }
  return text.str();
}

absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem, const std::string& what) {
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(cert);
  // The loop ends with "no start line" once the input is used up; anything else is damage.
  const unsigned long last = ERR_peek_last_error();
  const bool clean_end = ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
  const std::string errors = DrainOpenSslErrors();
  if (!certs.empty() && (last == 0 || clean_end)) return certs;
  std::string hint;
  if (pem.find("PRIVATE KEY-----") != std::string::npos) hint = " (it holds a private key: are cert and key swapped?)";
  if (certs.empty() && (last == 0 || clean_end)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not a PEM certificate: no \"-----BEGIN CERTIFICATE-----\" block", hint));
  }
  return absl::InvalidArgumentError(absl::StrCat(what, " is not a valid PEM certificate", certs.empty() ? "" : " chain",
                                                 hint, " (OpenSSL: ", errors, ")"));
}

namespace {

std::string NameText(const X509_NAME* name) {
  if (name == nullptr) return "?";
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : "(empty)";
}

}  // namespace

std::string SubjectText(const X509* cert) { return NameText(X509_get_subject_name(cert)); }
std::string IssuerText(const X509* cert) { return NameText(X509_get_issuer_name(cert)); }

std::vector<std::string> CertificateNames(const X509* cert) {
  std::vector<std::string> names;
  auto add = [&](std::string name) {
    if (name.empty()) return;
    for (const std::string& n : names) {
      if (n == name) return;
    }
    names.push_back(std::move(name));
  };
  const X509_NAME* subject = X509_get_subject_name(cert);
  const int cn = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (cn >= 0) {
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, cn));
    add(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)), ASN1_STRING_length(data)));
  }
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* san = sk_GENERAL_NAME_value(sans, i);
    if (san->type == GEN_DNS) {
      const ASN1_STRING* s = san->d.dNSName;
      add(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s)));
    } else if (san->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = san->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {};
      const int family = ip->length == 4 ? AF_INET : ip->length == 16 ? AF_INET6 : 0;
      if (family != 0 && inet_ntop(family, ip->data, text, sizeof(text)) != nullptr) add(text);
    }
  }
  GENERAL_NAMES_free(sans);
  return names;
}

std::string FormatAsn1Time(const ASN1_TIME* time) {
  std::tm tm{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return "?";
  return absl::StrFormat("%04d-%02d-%02d %02d:%02d:%02d UTC", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                         tm.tm_min, tm.tm_sec);
}

absl::Time Asn1ToTime(const ASN1_TIME* time) {
  std::tm tm{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return absl::InfinitePast();
  return absl::FromUnixSeconds(static_cast<int64_t>(timegm(&tm)));
}

std::string DescribeCertificate(const X509* cert) {
  return absl::StrCat("subject ", SubjectText(cert), ", issuer ", IssuerText(cert), ", valid ",
                      FormatAsn1Time(X509_get0_notBefore(cert)), " to ", FormatAsn1Time(X509_get0_notAfter(cert)));
}

}  // namespace fedprllm::tls_internal
