// CRL loading and certificate serial numbers, with OpenSSL.
#include "tls/revocation_list.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tls/openssl_util.h"

namespace fedprllm {
namespace {

using tls_internal::BioPtr;
using tls_internal::DrainOpenSslErrors;

struct CrlFree {
  void operator()(X509_CRL* p) const { X509_CRL_free(p); }
};

std::string SerialHex(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

absl::Time ToTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfiniteFuture();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<RevocationList> LoadRevocationList(const std::string& crl_path, const std::string& ca_path) {
  ASSIGN_OR_RETURN(std::string crl_pem, tls_internal::ReadPemFile(crl_path, "tls.crl"));
  ASSIGN_OR_RETURN(std::string ca_pem, tls_internal::ReadPemFile(ca_path, "tls.ca"));
  ASSIGN_OR_RETURN(std::vector<tls_internal::X509Ptr> cas,
                   tls_internal::ParseCertificates(ca_pem, absl::StrCat("config key 'tls.ca' (", ca_path, ")")));
  BioPtr bio(BIO_new_mem_buf(crl_pem.data(), static_cast<int>(crl_pem.size())));
  std::unique_ptr<X509_CRL, CrlFree> crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  if (crl == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("config key 'tls.crl': ", crl_path, " is not a PEM CRL (",
                                                   DrainOpenSslErrors(), ")"));
  }
  bool signed_by_ca = false;
  for (const auto& ca : cas) {
    EVP_PKEY* key = X509_get0_pubkey(ca.get());
    signed_by_ca = signed_by_ca || (key != nullptr && X509_CRL_verify(crl.get(), key) == 1);
  }
  DrainOpenSslErrors();
  if (!signed_by_ca) {
    return absl::InvalidArgumentError(absl::StrCat("config key 'tls.crl': ", crl_path,
                                                   " is not signed by the CA in ", ca_path));
  }
  RevocationList list;
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; revoked != nullptr && i < sk_X509_REVOKED_num(revoked); ++i) {
    list.serials.insert(SerialHex(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i))));
  }
  list.next_update = ToTime(X509_CRL_get0_nextUpdate(crl.get()));
  return list;
}

std::string CertificateSerialHex(const std::string& pem) {
  absl::StatusOr<std::vector<tls_internal::X509Ptr>> certs = tls_internal::ParseCertificates(pem, "peer certificate");
  if (!certs.ok() || certs->empty()) return "";
  return SerialHex(X509_get0_serialNumber(certs->front().get()));
}

}  // namespace fedprllm

namespace fedprllm {

absl::Time CertificateNotAfter(const std::string& pem) {
  absl::StatusOr<std::vector<tls_internal::X509Ptr>> certs = tls_internal::ParseCertificates(pem, "peer certificate");
  if (!certs.ok() || certs->empty()) return absl::InfiniteFuture();
  return ToTime(X509_get0_notAfter(certs->front().get()));
}

}  // namespace fedprllm
