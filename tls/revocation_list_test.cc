// LoadRevocationList: a CRL of the federation CA lists the revoked serials; a CRL of another
// CA, or a file that is not a CRL, is refused with the config key.
#include "tls/revocation_list.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tls/test_certs.h"
#include "tls/test_crl.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;
using testing::TestCerts;
using testing::WriteTestCrl;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(RevocationListTest, ListsTheRevokedSerialsOfTheCasCrl) {
  const TestCerts& certs = TestCerts::Get();
  const std::string crl = certs.Path("revoked-site-a.crl");
  ASSERT_TRUE(WriteTestCrl(certs.Path("ca.crt"), certs.Path("ca.key"), {certs.Path("site-a.crt")}, crl));
  absl::StatusOr<RevocationList> list = LoadRevocationList(crl, certs.Path("ca.crt"));
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->serials.size(), 1u);
  const std::string site_a = CertificateSerialHex(Read(certs.Path("site-a.crt")));
  ASSERT_FALSE(site_a.empty());
  EXPECT_TRUE(list->Revokes(site_a));
  EXPECT_FALSE(list->Revokes(CertificateSerialHex(Read(certs.Path("server.crt")))));
  EXPECT_GT(list->next_update, absl::Now() + absl::Hours(24 * 6));
  // make_certs.sh issues for 365 days; soon.crt expires in 10.
  EXPECT_GT(CertificateNotAfter(Read(certs.Path("site-a.crt"))), absl::Now() + absl::Hours(24 * 300));
  const absl::Duration soon = CertificateNotAfter(Read(certs.Path("soon.crt"))) - absl::Now();
  EXPECT_GT(soon, absl::Hours(24 * 9));
  EXPECT_LT(soon, absl::Hours(24 * 11));
  EXPECT_EQ(CertificateNotAfter("garbage"), absl::InfiniteFuture());

  const std::string empty = certs.Path("empty.crl");
  ASSERT_TRUE(WriteTestCrl(certs.Path("ca.crt"), certs.Path("ca.key"), {}, empty));
  absl::StatusOr<RevocationList> none = LoadRevocationList(empty, certs.Path("ca.crt"));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->serials.empty());
}

TEST(RevocationListTest, RefusesACrlOfAnotherCaAndFilesThatAreNoCrl) {
  const TestCerts& certs = TestCerts::Get();
  const std::string rogue = certs.Path("rogue.crl");
  ASSERT_TRUE(WriteTestCrl(certs.Path("rogue/ca.crt"), certs.Path("rogue/ca.key"), {}, rogue));
  absl::StatusOr<RevocationList> foreign = LoadRevocationList(rogue, certs.Path("ca.crt"));
  ASSERT_FALSE(foreign.ok());
  EXPECT_THAT(foreign.status().message(), HasSubstr("config key 'tls.crl'"));
  EXPECT_THAT(foreign.status().message(), HasSubstr("is not signed by the CA"));
  absl::StatusOr<RevocationList> not_crl = LoadRevocationList(certs.Path("site-a.crt"), certs.Path("ca.crt"));
  ASSERT_FALSE(not_crl.ok());
  EXPECT_THAT(not_crl.status().message(), HasSubstr("is not a PEM CRL"));
  EXPECT_EQ(LoadRevocationList(certs.Path("missing.crl"), certs.Path("ca.crt")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(CertificateSerialHex("not a certificate"), "");
}

}  // namespace
}  // namespace fedprllm
