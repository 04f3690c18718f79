// OpenSSL 3 EVP calls behind the secure sum's primitives.
#include "secagg/crypto.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tls/openssl_util.h"

namespace fedprllm::secagg {
namespace {

using tls_internal::BioPtr;
using tls_internal::DrainOpenSslErrors;
using tls_internal::PkeyPtr;
using tls_internal::X509Ptr;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, CipherCtxFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, CipherCtxFree>;

absl::Status OpenSslError(absl::string_view what) {
  const std::string reasons = DrainOpenSslErrors();
  return absl::InternalError(absl::StrCat(what, " failed", reasons.empty() ? "" : ": ", reasons));
}

absl::StatusOr<PkeyPtr> X25519PrivateKey(const Key32& private_key) {
  PkeyPtr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
  if (key == nullptr) return OpenSslError("loading an X25519 private key");
  return key;
}

absl::StatusOr<Key32> RawPublicKey(EVP_PKEY* key) {
  Key32 out{};
  size_t length = out.size();
  if (EVP_PKEY_get_raw_public_key(key, out.data(), &length) != 1 || length != out.size()) {
    return OpenSslError("reading an X25519 public key");
  }
  return out;
}

const EVP_MD* DigestFor(EVP_PKEY* key) {
  const int type = EVP_PKEY_get_base_id(key);
  return type == EVP_PKEY_ED25519 || type == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
}

std::string CommonName(X509* cert) {
  char name[256] = {0};
  const int length = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof(name));
  return length < 0 ? std::string() : std::string(name, static_cast<size_t>(length));
}

}  // namespace

absl::StatusOr<std::string> CertificateCommonName(const std::string& certificate_pem) {
  absl::StatusOr<std::vector<X509Ptr>> chain = tls_internal::ParseCertificates(certificate_pem, "the site certificate");
  if (!chain.ok()) return absl::InvalidArgumentError(chain.status().message());
  if (chain->empty()) return absl::InvalidArgumentError("the site certificate file holds no certificate");
  std::string name = CommonName((*chain)[0].get());
  if (name.empty()) return absl::InvalidArgumentError("the site certificate has no common name");
  return name;
}

absl::StatusOr<X25519KeyPair> GenerateX25519KeyPair() {
  PkeyCtxPtr context(EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr));
  EVP_PKEY* raw = nullptr;
  if (context == nullptr || EVP_PKEY_keygen_init(context.get()) != 1 || EVP_PKEY_keygen(context.get(), &raw) != 1) {
    return OpenSslError("X25519 key generation");
  }
  PkeyPtr key(raw);
  X25519KeyPair pair;
  size_t length = pair.private_key.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), pair.private_key.data(), &length) != 1 || length != 32) {
    return OpenSslError("reading an X25519 private key");
  }
  absl::StatusOr<Key32> public_key = RawPublicKey(key.get());
  if (!public_key.ok()) return public_key.status();
  pair.public_key = *public_key;
  return pair;
}

absl::StatusOr<Key32> X25519PublicKey(const Key32& private_key) {
  absl::StatusOr<PkeyPtr> key = X25519PrivateKey(private_key);
  if (!key.ok()) return key.status();
  return RawPublicKey(key->get());
}

absl::StatusOr<Key32> DeriveSharedKey(const Key32& private_key, const Key32& peer_public_key, absl::string_view salt,
                                      absl::string_view info) {
  absl::StatusOr<PkeyPtr> own = X25519PrivateKey(private_key);
  if (!own.ok()) return own.status();
  PkeyPtr peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public_key.data(), peer_public_key.size()));
  if (peer == nullptr) return OpenSslError("loading an X25519 public key");
  PkeyCtxPtr derive(EVP_PKEY_CTX_new(own->get(), nullptr));
  Key32 shared{};
  size_t length = shared.size();
  if (derive == nullptr || EVP_PKEY_derive_init(derive.get()) != 1 ||
      EVP_PKEY_derive_set_peer(derive.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(derive.get(), shared.data(), &length) != 1 || length != shared.size()) {
    return OpenSslError("X25519 key agreement");
  }
  PkeyCtxPtr hkdf(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  Key32 out{};
  size_t out_length = out.size();
  if (hkdf == nullptr || EVP_PKEY_derive_init(hkdf.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(hkdf.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(hkdf.get(), reinterpret_cast<const unsigned char*>(salt.data()),
                                  static_cast<int>(salt.size())) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(hkdf.get(), shared.data(), static_cast<int>(shared.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(hkdf.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) != 1 ||
      EVP_PKEY_derive(hkdf.get(), out.data(), &out_length) != 1 || out_length != out.size()) {
    return OpenSslError("HKDF-SHA256");
  }
  return out;
}

absl::StatusOr<Key32> RandomKey() {
  Key32 key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) return OpenSslError("RAND_bytes");
  return key;
}

absl::Status ApplyMaskStream(const Key32& seed, int sign, absl::Span<uint64_t> words) {
  const std::array<uint8_t, 16> iv{};  // 32-bit block counter 0, 96-bit nonce 0
  CipherCtxPtr context(EVP_CIPHER_CTX_new());
  if (context == nullptr ||
      EVP_EncryptInit_ex(context.get(), EVP_chacha20(), nullptr, seed.data(), iv.data()) != 1) {
    return OpenSslError("ChaCha20 setup");
  }
  constexpr size_t kBlockWords = 8192;
  std::vector<uint8_t> zeros(kBlockWords * 8, 0), stream(kBlockWords * 8);
  for (size_t start = 0; start < words.size(); start += kBlockWords) {
    const size_t count = std::min(kBlockWords, words.size() - start);
    int produced = 0;
    if (EVP_EncryptUpdate(context.get(), stream.data(), &produced, zeros.data(), static_cast<int>(count * 8)) != 1 ||
        produced != static_cast<int>(count * 8)) {
      return OpenSslError("ChaCha20 stream");
    }
    for (size_t i = 0; i < count; ++i) {
      uint64_t word = 0;
      for (int b = 7; b >= 0; --b) word = (word << 8) | stream[i * 8 + b];
      words[start + i] = sign > 0 ? words[start + i] + word : words[start + i] - word;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Seal(const Key32& key, absl::string_view associated_data, absl::string_view plaintext) {
  std::string out(12 + plaintext.size() + 16, '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  if (RAND_bytes(bytes, 12) != 1) return OpenSslError("RAND_bytes");
  CipherCtxPtr context(EVP_CIPHER_CTX_new());
  int length = 0;
  if (context == nullptr ||
      EVP_EncryptInit_ex(context.get(), EVP_chacha20_poly1305(), nullptr, key.data(), bytes) != 1 ||
      EVP_EncryptUpdate(context.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(associated_data.data()),
                        static_cast<int>(associated_data.size())) != 1 ||
      EVP_EncryptUpdate(context.get(), bytes + 12, &length, reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(context.get(), bytes + 12 + length, &length) != 1 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_AEAD_GET_TAG, 16, bytes + 12 + plaintext.size()) != 1) {
    return OpenSslError("ChaCha20-Poly1305 sealing");
  }
  return out;
}

absl::StatusOr<std::string> Open(const Key32& key, absl::string_view associated_data, absl::string_view sealed) {
  if (sealed.size() < 28) return absl::DataLossError(absl::StrCat("a sealed share of ", sealed.size(), " bytes is too short"));
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  const size_t plaintext_size = sealed.size() - 28;
  std::string out(plaintext_size, '\0');
  std::array<unsigned char, 16> tag{};
  std::copy(bytes + 12 + plaintext_size, bytes + sealed.size(), tag.begin());
  CipherCtxPtr context(EVP_CIPHER_CTX_new());
  int length = 0;
  if (context == nullptr ||
      EVP_DecryptInit_ex(context.get(), EVP_chacha20_poly1305(), nullptr, key.data(), bytes) != 1 ||
      EVP_DecryptUpdate(context.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(associated_data.data()),
                        static_cast<int>(associated_data.size())) != 1 ||
      EVP_DecryptUpdate(context.get(), reinterpret_cast<unsigned char*>(out.data()), &length, bytes + 12,
                        static_cast<int>(plaintext_size)) != 1 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_AEAD_SET_TAG, 16, tag.data()) != 1) {
    return OpenSslError("ChaCha20-Poly1305 opening");
  }
  int final_length = 0;
  if (EVP_DecryptFinal_ex(context.get(), reinterpret_cast<unsigned char*>(out.data()) + length, &final_length) != 1) {
    DrainOpenSslErrors();
    return absl::DataLossError("a sealed share does not verify (wrong key, or altered bytes)");
  }
  return out;
}

absl::StatusOr<std::string> SignMessage(const std::string& private_key_pem, absl::string_view message) {
  BioPtr bio(BIO_new_mem_buf(private_key_pem.data(), static_cast<int>(private_key_pem.size())));
  PkeyPtr key(bio == nullptr ? nullptr : PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) return absl::InvalidArgumentError("the signing key is not a PEM private key: " + DrainOpenSslErrors());
  MdCtxPtr context(EVP_MD_CTX_new());
  size_t length = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(message.data());
  if (context == nullptr || EVP_DigestSignInit(context.get(), nullptr, DigestFor(key.get()), nullptr, key.get()) != 1 ||
      EVP_DigestSign(context.get(), nullptr, &length, data, message.size()) != 1) {
    return OpenSslError("signing");
  }
  std::string signature(length, '\0');
  if (EVP_DigestSign(context.get(), reinterpret_cast<unsigned char*>(signature.data()), &length, data, message.size()) != 1) {
    return OpenSslError("signing");
  }
  signature.resize(length);
  return signature;
}

absl::Status VerifySiteSignature(const std::string& ca_pem, const std::string& certificate_pem,
                                 const std::string& site, absl::string_view message, absl::string_view signature) {
  const auto denied = [&](absl::string_view why) {
    return absl::PermissionDeniedError(absl::StrCat("the key advertisement of site '", site, "' is refused: ", why));
  };
  absl::StatusOr<std::vector<X509Ptr>> chain = tls_internal::ParseCertificates(certificate_pem, "its certificate");
  if (!chain.ok()) return denied(chain.status().message());
  absl::StatusOr<std::vector<X509Ptr>> roots = tls_internal::ParseCertificates(ca_pem, "the federation CA");
  if (!roots.ok()) return roots.status();
  tls_internal::StorePtr store(X509_STORE_new());
  for (const X509Ptr& root : *roots) X509_STORE_add_cert(store.get(), root.get());
  tls_internal::X509StackPtr intermediates(sk_X509_new_null());
  for (size_t i = 1; i < chain->size(); ++i) sk_X509_push(intermediates.get(), (*chain)[i].get());
  tls_internal::StoreCtxPtr verify(X509_STORE_CTX_new());
  X509* leaf = (*chain)[0].get();
  if (verify == nullptr || X509_STORE_CTX_init(verify.get(), store.get(), leaf, intermediates.get()) != 1) {
    return OpenSslError("certificate verification setup");
  }
  if (X509_verify_cert(verify.get()) != 1) {
    const std::string why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(verify.get()));
    DrainOpenSslErrors();
    return denied(absl::StrCat("its certificate does not chain to the federation CA (", why, ")"));
  }
  if (const std::string cn = CommonName(leaf); cn != site) {
    return denied(absl::StrCat("its certificate is for '", cn, "'"));
  }
  EVP_PKEY* key = X509_get0_pubkey(leaf);
  MdCtxPtr context(EVP_MD_CTX_new());
  if (key == nullptr || context == nullptr ||
      EVP_DigestVerifyInit(context.get(), nullptr, DigestFor(key), nullptr, key) != 1) {
    return OpenSslError("signature verification setup");
  }
  if (EVP_DigestVerify(context.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    DrainOpenSslErrors();
    return denied("its signature does not verify with its certificate's key");
  }
  return absl::OkStatus();
}

}  // namespace fedprllm::secagg
