// Certificate summaries, the expiry warning and the preflight's certificate line on real
// files: a good pair is ok and names its subject and notAfter; one expiring in 10 days is a
// warning naming the file and the date; an expired one and a key of another certificate
// fail with CheckKeyPair's words.
#include "tls/certificate_check.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tls/test_certs.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TestCerts;

TlsFiles Files(const std::string& cert, const std::string& key, const std::string& ca = "ca.crt") {
  const TestCerts& c = TestCerts::Get();
  return TlsFiles{c.Path(cert), c.Path(key), c.Path(ca)};
}

TEST(CertificateSummaryTest, ReadsSubjectNamesAndDates) {
  const absl::StatusOr<std::vector<CertificateSummary>> certs =
      ReadCertificateSummaries(TestCerts::Get().Path("server.crt"), "tls.cert");
  ASSERT_TRUE(certs.ok()) << certs.status();
  ASSERT_EQ(certs->size(), 1u);
  EXPECT_EQ(certs->front().subject, "CN=localhost");
  EXPECT_EQ(certs->front().common_name, "localhost");
  EXPECT_THAT(certs->front().names, ElementsAre("localhost", "127.0.0.1"));
  // make_certs.sh issues for 365 days.
  EXPECT_NEAR(absl::ToDoubleHours(certs->front().not_after - certs->front().not_before) / 24, 365, 1);
  const absl::StatusOr<std::vector<CertificateSummary>> garbage =
      ReadCertificateSummaries(TestCerts::Get().Path("garbage.pem"), "tls.ca");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr("config key 'tls.ca'"));
}

TEST(ExpiringCertificatesTest, OnlyThoseWithinThePeriod) {
  const absl::Time now = absl::Now();
  const absl::StatusOr<std::vector<std::string>> good = ExpiringCertificates(Files("site-a.crt", "site-a.key"), now);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(good->empty());
  const absl::StatusOr<std::vector<std::string>> soon = ExpiringCertificates(Files("soon.crt", "site-a.key"), now);
  ASSERT_TRUE(soon.ok()) << soon.status();
  ASSERT_EQ(soon->size(), 1u);
  EXPECT_THAT(soon->front(), AllOf(HasSubstr("config key 'tls.cert'"), HasSubstr("soon.crt"), HasSubstr("CN=site-a"),
                                   HasSubstr("expires in 9 days"), HasSubstr("UTC (notAfter)")));
  // 350 days on, site-a.crt and ca.crt (both issued for 365 days) are 15 days from their end;
  // 400 days on, both have expired, which is CheckKeyPair's to report, not a warning.
  const absl::StatusOr<std::vector<std::string>> later =
      ExpiringCertificates(Files("site-a.crt", "site-a.key"), now + absl::Hours(24 * 350));
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->size(), 2u);
  EXPECT_TRUE(ExpiringCertificates(Files("site-a.crt", "site-a.key"), now + absl::Hours(24 * 400))->empty());
}

TEST(ReportCertificateCheckTest, OkWarnAndFail) {
  CheckReport report;
  EXPECT_EQ(ReportCertificateCheck(Files("site-a.crt", "site-a.key"), TlsRole::kClient, &report), "site-a");
  EXPECT_EQ(ReportCertificateCheck(Files("soon.crt", "site-a.key"), TlsRole::kClient, &report), "site-a");
  EXPECT_EQ(ReportCertificateCheck(Files("expired.crt", "site-a.key"), TlsRole::kClient, &report), "");
  EXPECT_EQ(ReportCertificateCheck(Files("site-a.crt", "server.key"), TlsRole::kClient, &report), "");
  EXPECT_EQ(ReportCertificateCheck(Files("server.crt", "server.key"), TlsRole::kServer, &report), "localhost");
  ASSERT_EQ(report.lines().size(), 5u);
  const std::vector<CheckLine>& l = report.lines();
  EXPECT_EQ(l[0].result, CheckResult::kOk);
  EXPECT_THAT(CheckReport::Format(l[0]),
              AllOf(HasSubstr("ok   certificate: "), HasSubstr("site-a.crt (CN=site-a, names [site-a], valid until "),
                    HasSubstr("matches "), HasSubstr("site-a.key"), HasSubstr("verifies against "),
                    HasSubstr("as a TLS client certificate")));
  EXPECT_EQ(l[1].result, CheckResult::kWarn);
  EXPECT_THAT(CheckReport::Format(l[1]), AllOf(HasSubstr("warn certificate: "), HasSubstr("soon.crt"),
                                               HasSubstr("expires in 9 days"), HasSubstr("renew")));
  EXPECT_EQ(l[2].result, CheckResult::kFail);
  EXPECT_THAT(CheckReport::Format(l[2]),
              AllOf(HasSubstr("FAIL certificate: "), HasSubstr("expired.crt"), HasSubstr("expired on")));
  EXPECT_EQ(l[3].result, CheckResult::kFail);
  EXPECT_THAT(l[3].text, AllOf(HasSubstr("server.key"), HasSubstr("is not the private key of the certificate")));
  EXPECT_THAT(l[4].text, AllOf(HasSubstr("names [localhost, 127.0.0.1]"), HasSubstr("TLS server certificate")));
  EXPECT_FALSE(report.passed());
}

}  // namespace
}  // namespace fedprllm
