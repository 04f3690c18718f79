// A CRL for tests, made with OpenSSL's API from a CA certificate and key in PEM files, as
// `fedprllm-certs revoke` would write it: version 2, issuer = the CA, valid for 7 days,
// revoking the certificates given. Header-only: tests include it.
#pragma once

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

namespace fedprllm::testing {

// Writes the CRL to `out_path`; false if a file cannot be read or the CRL not signed.
inline bool WriteTestCrl(const std::string& ca_cert_path, const std::string& ca_key_path,
                         const std::vector<std::string>& revoked_cert_paths, const std::string& out_path) {
  auto read_cert = [](const std::string& path) -> X509* {
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) return nullptr;
    X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    return cert;
  };
  X509* ca = read_cert(ca_cert_path);
  std::FILE* key_file = std::fopen(ca_key_path.c_str(), "r");
  EVP_PKEY* key = key_file != nullptr ? PEM_read_PrivateKey(key_file, nullptr, nullptr, nullptr) : nullptr;
  if (key_file != nullptr) std::fclose(key_file);
  X509_CRL* crl = X509_CRL_new();
  bool ok = ca != nullptr && key != nullptr && crl != nullptr;
  const std::time_t now = std::time(nullptr);
  ASN1_TIME* last = ASN1_TIME_set(nullptr, now);
  ASN1_TIME* next = ASN1_TIME_set(nullptr, now + 7 * 24 * 3600);
  if (ok) {
    ok = X509_CRL_set_version(crl, 1) == 1 && X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) == 1 &&
         X509_CRL_set1_lastUpdate(crl, last) == 1 && X509_CRL_set1_nextUpdate(crl, next) == 1;
  }
  for (const std::string& path : revoked_cert_paths) {
    X509* cert = ok ? read_cert(path) : nullptr;
    if (cert == nullptr) {
      ok = false;
      break;
    }
    X509_REVOKED* revoked = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(revoked, X509_get_serialNumber(cert));
    X509_REVOKED_set_revocationDate(revoked, last);
    X509_CRL_add0_revoked(crl, revoked);
    X509_free(cert);
  }
  if (ok) {
    X509_CRL_sort(crl);
    ok = X509_CRL_sign(crl, key, EVP_sha256()) > 0;
  }
  std::FILE* out = ok ? std::fopen(out_path.c_str(), "w") : nullptr;
  if (out != nullptr) {
    ok = PEM_write_X509_CRL(out, crl) == 1;
    std::fclose(out);
  } else {
    ok = false;
  }
  ASN1_TIME_free(last);
  ASN1_TIME_free(next);
  X509_CRL_free(crl);
  EVP_PKEY_free(key);
  X509_free(ca);
  return ok;
}

}  // namespace fedprllm::testing
