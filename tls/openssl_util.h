// Small OpenSSL helpers shared by the TLS checks and the server probe: owning pointers,
// the thread's OpenSSL error queue as text, and operator-readable certificate descriptions.
// Internal to fedprllm::tls.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fedprllm::tls_internal {

struct OpenSslFree {
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
  void operator()(SSL* p) const { SSL_free(p); }
  void operator()(STACK_OF(X509) * p) const { sk_X509_free(p); }  // the certificates stay owned elsewhere
};
using X509Ptr = std::unique_ptr<X509, OpenSslFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree>;
using BioPtr = std::unique_ptr<BIO, OpenSslFree>;
using StorePtr = std::unique_ptr<X509_STORE, OpenSslFree>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslFree>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, OpenSslFree>;
using SslPtr = std::unique_ptr<SSL, OpenSslFree>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), OpenSslFree>;

// Empties this thread's OpenSSL error queue; returns the reasons joined by "; " (the
// reason strings only, e.g. "certificate verify failed"), or "" if it was empty.
std::string DrainOpenSslErrors();

// Reads a whole file. NOT_FOUND names the config key and the path; INVALID_ARGUMENT if the
// file is empty.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& config_key);

// Every certificate in `pem`, in order (leaf first for a chain file). Fails with words if
// there is none; `what` names the input in the message ("config key 'tls.cert' (a.crt)").
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem, const std::string& what);

// The subject as RFC 2253 text, e.g. "CN=site-a".
std::string SubjectText(const X509* cert);
std::string IssuerText(const X509* cert);

// The names a TLS peer can be checked against: subject CN first, then SAN DNS names and
// IP addresses, without repeats.
std::vector<std::string> CertificateNames(const X509* cert);

// "2027-01-31 12:00:00 UTC"; "?" if the time cannot be read.
std::string FormatAsn1Time(const ASN1_TIME* time);
// The same time as absl::Time; InfinitePast if it cannot be read.
absl::Time Asn1ToTime(const ASN1_TIME* time);

// "subject CN=site-a, issuer CN=FedPrLLM federation CA, valid 2026-01-01 ... to 2027-01-01 ..."
std::string DescribeCertificate(const X509* cert);

}  // namespace fedprllm::tls_internal
