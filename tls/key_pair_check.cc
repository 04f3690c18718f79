// CheckKeyPair: parse the PEM files, match key and certificate, check dates and the chain.
#include "tls/key_pair_check.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "tls/openssl_util.h"

namespace fedprllm {

using tls_internal::BioPtr;
using tls_internal::DescribeCertificate;
using tls_internal::DrainOpenSslErrors;
using tls_internal::FormatAsn1Time;
using tls_internal::PkeyPtr;
using tls_internal::StoreCtxPtr;
using tls_internal::StorePtr;
using tls_internal::SubjectText;
using tls_internal::X509Ptr;
using tls_internal::X509StackPtr;

namespace {

std::string Where(const std::string& key, const std::string& path) {
  return absl::StrCat("config key '", key, "' (", path, ")");
}

absl::StatusOr<PkeyPtr> ParsePrivateKey(const std::string& pem, const std::string& what) {
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  // An empty passphrase callback: an encrypted key fails here instead of prompting on a tty.
  PkeyPtr key(PEM_read_bio_PrivateKey(
      bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  const std::string errors = DrainOpenSslErrors();
  if (key != nullptr) return key;
  if (pem.find("ENCRYPTED") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is an encrypted private key; the daemons need it unencrypted (mode 0600)"));
  }
  if (pem.find("-----BEGIN CERTIFICATE-----") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " holds a certificate, not a private key: are cert and key swapped?"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is not a PEM private key", errors.empty() ? "" : absl::StrCat(" (OpenSSL: ", errors, ")")));
}

}  // namespace

absl::Status CheckKeyPair(const TlsFiles& files, TlsRole role, absl::Time now) {
  const std::string cert_where = Where("tls.cert", files.cert);
  const std::string key_where = Where("tls.key", files.key);
  const std::string ca_where = Where("tls.ca", files.ca);
  ASSIGN_OR_RETURN(const std::string cert_pem, tls_internal::ReadPemFile(files.cert, "tls.cert"));
  ASSIGN_OR_RETURN(const std::string key_pem, tls_internal::ReadPemFile(files.key, "tls.key"));
  ASSIGN_OR_RETURN(const std::string ca_pem, tls_internal::ReadPemFile(files.ca, "tls.ca"));
  ASSIGN_OR_RETURN(std::vector<X509Ptr> chain, tls_internal::ParseCertificates(cert_pem, cert_where));
  ASSIGN_OR_RETURN(PkeyPtr key, ParsePrivateKey(key_pem, key_where));
  ASSIGN_OR_RETURN(std::vector<X509Ptr> cas, tls_internal::ParseCertificates(ca_pem, ca_where));
  X509* leaf = chain.front().get();

  ERR_clear_error();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    DrainOpenSslErrors();
    return absl::InvalidArgumentError(absl::StrCat(key_where, " is not the private key of the certificate in ",
                                                   cert_where, " (", SubjectText(leaf), ")"));
  }

  time_t now_t = absl::ToTimeT(now);
  // Expiry first: a certificate whose validity ended is expired, whatever its start.
  if (X509_cmp_time(X509_get0_notAfter(leaf), &now_t) < 0) {
    return absl::FailedPreconditionError(absl::StrCat(cert_where, " expired on ",
                                                      FormatAsn1Time(X509_get0_notAfter(leaf)), " (", SubjectText(leaf),
                                                      "); renew it (deploy/make_certs.sh)"));
  }
  if (X509_cmp_time(X509_get0_notBefore(leaf), &now_t) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(cert_where, " is not valid yet: valid from ",
                                                      FormatAsn1Time(X509_get0_notBefore(leaf)), " (",
                                                      SubjectText(leaf), "); is this machine's clock right?"));
  }

  StorePtr store(X509_STORE_new());
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  X509StackPtr untrusted(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (ctx == nullptr || X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get()) != 1) {
    return absl::InternalError(absl::StrCat("cannot set up certificate verification: ", DrainOpenSslErrors()));
  }
  X509_STORE_CTX_set_purpose(ctx.get(), role == TlsRole::kServer ? X509_PURPOSE_SSL_SERVER : X509_PURPOSE_SSL_CLIENT);
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), now_t);
  if (X509_verify_cert(ctx.get()) == 1) return absl::OkStatus();

  const int error = X509_STORE_CTX_get_error(ctx.get());
  const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
  DrainOpenSslErrors();
  const std::string why = X509_verify_cert_error_string(error);
  std::vector<std::string> ca_subjects;
  for (const X509Ptr& ca : cas) ca_subjects.push_back(SubjectText(ca.get()));
  const std::string ca_text = absl::StrCat(ca_where, " [", absl::StrJoin(ca_subjects, "; "), "]");
  switch (error) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return absl::FailedPreconditionError(absl::StrCat(cert_where, " is not signed by the CA in ", ca_text, ": ",
                                                        DescribeCertificate(leaf), " (OpenSSL: ", why, ")"));
    case X509_V_ERR_INVALID_PURPOSE:
      return absl::FailedPreconditionError(
          absl::StrCat(cert_where, " is not a TLS ", role == TlsRole::kServer ? "server" : "client",
                       " certificate (its extended key usage lacks ",
                       role == TlsRole::kServer ? "serverAuth" : "clientAuth", "): ", DescribeCertificate(leaf)));
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      // The leaf's dates were checked above, so this is a CA or an intermediate.
      return absl::FailedPreconditionError(absl::StrCat(
          "the certificate chain of ", cert_where, " is outside its validity period at depth ", depth, " (",
          depth > 0 && static_cast<size_t>(depth) < chain.size() ? "an intermediate in tls.cert" : "the CA in tls.ca",
          "; ", why, "): ", ca_text));
    default:
      return absl::FailedPreconditionError(absl::StrCat(cert_where, " does not verify against ", ca_text, " (depth ",
                                                        depth, ": ", why, "): ", DescribeCertificate(leaf)));
  }
}

}  // namespace fedprllm
