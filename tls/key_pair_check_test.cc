// CheckKeyPair on real certificate files: a good pair passes; a key of another certificate,
// an expired or not yet valid certificate, files that are not PEM, a certificate from
// another CA and one with the wrong key usage fail with the file and the cause in words.
#include "tls/key_pair_check.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tls/test_certs.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TestCerts;

// The certificates are made before any test runs: CheckKeyPair's default `now` may be
// evaluated before a Files(...) argument that would make them, and then lie a second before
// their notBefore.
::testing::Environment* const kMakeCertificatesFirst =
    ::testing::AddGlobalTestEnvironment(new testing::MakeCertificatesFirst);

TlsFiles Files(const std::string& cert, const std::string& key, const std::string& ca = "ca.crt") {
  const TestCerts& c = TestCerts::Get();
  return TlsFiles{c.Path(cert), c.Path(key), c.Path(ca)};
}

TEST(CheckKeyPairTest, GoodPairsPass) {
  EXPECT_TRUE(CheckKeyPair(Files("server.crt", "server.key"), TlsRole::kServer).ok())
      << CheckKeyPair(Files("server.crt", "server.key"), TlsRole::kServer);
  EXPECT_TRUE(CheckKeyPair(Files("site-a.crt", "site-a.key"), TlsRole::kClient).ok())
      << CheckKeyPair(Files("site-a.crt", "site-a.key"), TlsRole::kClient);
  // The rogue pair is consistent in itself: signed by the CA it names.
  EXPECT_TRUE(CheckKeyPair(Files("rogue/mallory.crt", "rogue/mallory.key", "rogue/ca.crt"), TlsRole::kClient).ok());
}

TEST(CheckKeyPairTest, KeyOfAnotherCertificate) {
  const absl::Status s = CheckKeyPair(Files("site-a.crt", "server.key"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("config key 'tls.key'"), HasSubstr("server.key"),
                                              HasSubstr("is not the private key of the certificate in"),
                                              HasSubstr("site-a.crt"), HasSubstr("CN=site-a")));
}

TEST(CheckKeyPairTest, ExpiredCertificate) {
  const absl::Status s = CheckKeyPair(Files("expired.crt", "site-a.key"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("config key 'tls.cert'"), HasSubstr("expired.crt"),
                                              HasSubstr("expired on"), HasSubstr("UTC")));
}

TEST(CheckKeyPairTest, ValidityPeriodAtOtherTimes) {
  const TlsFiles good = Files("site-a.crt", "site-a.key");
  // make_certs.sh issues for 365 days from now.
  const absl::Status later = CheckKeyPair(good, TlsRole::kClient, absl::Now() + absl::Hours(24 * 400));
  EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(later.message()), HasSubstr("expired on"));
  const absl::Status earlier = CheckKeyPair(good, TlsRole::kClient, absl::Now() - absl::Hours(48));
  EXPECT_EQ(earlier.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(earlier.message()), AllOf(HasSubstr("is not valid yet: valid from"), HasSubstr("clock")));
}

TEST(CheckKeyPairTest, FilesThatAreNotPem) {
  absl::Status s = CheckKeyPair(Files("garbage.pem", "site-a.key"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("config key 'tls.cert'"), HasSubstr("garbage.pem"),
                                              HasSubstr("is not a PEM certificate")));
  s = CheckKeyPair(Files("damaged.pem", "site-a.key"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("damaged.pem"), HasSubstr("is not a valid PEM certificate")));
  s = CheckKeyPair(Files("site-a.crt", "garbage.pem"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("config key 'tls.key'"), HasSubstr("is not a PEM private key")));
  s = CheckKeyPair(Files("site-a.crt", "site-a.key", "garbage.pem"), TlsRole::kClient);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("config key 'tls.ca'"), HasSubstr("is not a PEM certificate")));
  s = CheckKeyPair(Files("site-a.key", "site-a.crt"), TlsRole::kClient);
  EXPECT_THAT(std::string(s.message()), HasSubstr("are cert and key swapped?"));
  s = CheckKeyPair(Files("site-a.crt", "empty.pem"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("config key 'tls.key'"), HasSubstr("is empty")));
  s = CheckKeyPair(Files("site-a.crt", "site-a.key", "no-such-ca.crt"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("config key 'tls.ca'"), HasSubstr("no-such-ca.crt")));
}

TEST(CheckKeyPairTest, CertificateOfAnotherCa) {
  const absl::Status s = CheckKeyPair(Files("rogue/mallory.crt", "rogue/mallory.key"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("config key 'tls.cert'"), HasSubstr("mallory.crt"),
                                              HasSubstr("is not signed by the CA in config key 'tls.ca'"),
                                              HasSubstr("FedPrLLM federation CA"), HasSubstr("issuer CN=Rogue CA")));
}

TEST(CheckKeyPairTest, WrongKeyUsage) {
  // The server's certificate has serverAuth only; a site's has clientAuth only.
  absl::Status s = CheckKeyPair(Files("server.crt", "server.key"), TlsRole::kClient);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("is not a TLS client certificate"));
  s = CheckKeyPair(Files("site-a.crt", "site-a.key"), TlsRole::kServer);
  EXPECT_THAT(std::string(s.message()), HasSubstr("is not a TLS server certificate"));
}

}  // namespace
}  // namespace fedprllm
