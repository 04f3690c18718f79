// ProbeServer against a real in-process gRPC server on 127.0.0.1: accepted; wrong server
// name; a site certificate from another CA; a server the site's CA does not vouch for; a
// plaintext server; nothing listening and a listener that never answers (transient).
#include "tls/server_probe.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tls/test_certs.h"
#include "tls/test_server.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TestCerts;
using testing::TestGrpcServer;

TlsFiles Files(const std::string& cert, const std::string& key, const std::string& ca = "ca.crt") {
  const TestCerts& c = TestCerts::Get();
  return TlsFiles{c.Path(cert), c.Path(key), c.Path(ca)};
}

const TlsFiles& SiteA() {
  static const TlsFiles files = Files("site-a.crt", "site-a.key");
  return files;
}

// A TCP socket bound to 127.0.0.1 on a free port; listening if `listen`.
class LoopbackSocket {
 public:
  explicit LoopbackSocket(bool listen) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (listen) ::listen(fd_, 4);
  }
  ~LoopbackSocket() { ::close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class ServerProbeTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()); }
  TestGrpcServer server_{TestCerts::Get().dir()};
};

TEST_F(ServerProbeTest, AcceptedByIpAndByName) {
  const absl::Status by_ip = ProbeServer(server_.address(), "", SiteA());
  EXPECT_TRUE(by_ip.ok()) << by_ip;
  const absl::Status by_name = ProbeServer("localhost:" + std::to_string(server_.port()), "", SiteA());
  EXPECT_TRUE(by_name.ok()) << by_name;
  const absl::Status override_name = ProbeServer(server_.address(), "localhost", SiteA());
  EXPECT_TRUE(override_name.ok()) << override_name;
}

TEST_F(ServerProbeTest, WrongServerName) {
  const absl::Status s = ProbeServer(server_.address(), "fedprllm.example.org", SiteA());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("server name mismatch"), HasSubstr("[localhost, 127.0.0.1]"),
                    HasSubstr("not for \"fedprllm.example.org\" (config key 'server_name')")));
}

TEST_F(ServerProbeTest, SiteCertificateFromAnotherCa) {
  // mallory trusts the federation CA (so the server passes), but its own certificate comes
  // from the rogue CA: the TLS 1.3 server refuses it after the handshake.
  const auto start = std::chrono::steady_clock::now();
  const absl::Status s = ProbeServer(server_.address(), "", Files("rogue/mallory.crt", "rogue/mallory.key"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("refused this site's certificate"), HasSubstr("mallory.crt"),
                    HasSubstr("issuer CN=Rogue CA"), HasSubstr("this site's end of the connection: 127.0.0.1:")));
}

TEST_F(ServerProbeTest, ServerNotTrustedBySiteCa) {
  const absl::Status s = ProbeServer(server_.address(), "", Files("site-a.crt", "site-a.key", "rogue/ca.crt"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("is not trusted by config key 'tls.ca'"), HasSubstr("rogue/ca.crt"),
                    HasSubstr("subject CN=localhost, issuer CN=FedPrLLM federation CA")));
}

TEST(ServerProbeTransientTest, NothingListening) {
  std::string address;
  {
    LoopbackSocket closed(/*listen=*/false);
    address = closed.address();
  }
  const absl::Status s = ProbeServer(address, "", SiteA());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("cannot connect to 127.0.0.1:"), HasSubstr("Connection refused")));
}

TEST(ServerProbeTransientTest, ListenerThatNeverAnswers) {
  LoopbackSocket silent(/*listen=*/true);  // the kernel accepts; nobody reads
  const auto start = std::chrono::steady_clock::now();
  const absl::Status s = ProbeServer(silent.address(), "", SiteA(), absl::Milliseconds(500));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("did not finish the TLS handshake within 500ms"));
  EXPECT_GE(took, std::chrono::milliseconds(450));
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST(ServerProbeTransientTest, UnresolvableOrMalformedAddress) {
  EXPECT_EQ(ProbeServer("no-such-host.invalid:5", "", SiteA()).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ProbeServer("unix:/tmp/socket", "", SiteA()).code(), absl::StatusCode::kUnavailable);
}

TEST(ServerProbePlaintextTest, PlaintextServerIsNotTransient) {
  TestGrpcServer plaintext("");
  ASSERT_TRUE(plaintext.ok());
  const absl::Status s = ProbeServer(plaintext.address(), "", SiteA());
  // gRPC answers the ClientHello in plaintext HTTP/2, which OpenSSL reads as a bad record.
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not speak TLS"));
}

TEST_F(ServerProbeTest, DiagnosisConfirmsAndKeepsAPermanentFinding) {
  UnavailableDiagnosis rogue(server_.address(), "", Files("rogue/mallory.crt", "rogue/mallory.key"), absl::Seconds(5),
                             absl::Milliseconds(200));
  std::string seen;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status first = rogue.Diagnose(&seen);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));  // confirmed once more
  EXPECT_EQ(first.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(first.message()), HasSubstr("refused this site's certificate"));
  EXPECT_EQ(rogue.Diagnose(&seen), first);  // sticky
}

TEST(ServerProbeDiagnosisTest, HealthyServerSaysSoAndProbesAreRateLimited) {
  std::optional<TestGrpcServer> server;
  server.emplace(TestCerts::Get().dir());
  ASSERT_TRUE(server->ok());
  UnavailableDiagnosis limited(server->address(), "", SiteA(), absl::Seconds(60), absl::Milliseconds(10));
  UnavailableDiagnosis unlimited(server->address(), "", SiteA(), absl::ZeroDuration(), absl::Milliseconds(10));
  std::string seen;
  EXPECT_TRUE(limited.Diagnose(&seen).ok());
  EXPECT_THAT(seen, HasSubstr("succeeded (the server accepts this site's certificate)"));
  EXPECT_TRUE(unlimited.Diagnose(&seen).ok());
  server.reset();  // nothing listens any more
  // Within its interval `limited` does not probe again and repeats what it saw.
  EXPECT_TRUE(limited.Diagnose(&seen).ok());
  EXPECT_THAT(seen, HasSubstr("succeeded"));
  EXPECT_TRUE(unlimited.Diagnose(&seen).ok());
  EXPECT_THAT(seen, HasSubstr("cannot connect to"));
}

TEST(ServerProbeTransientTest, DiagnosisOfNothingListeningIsTransient) {
  std::string address;
  {
    LoopbackSocket closed(/*listen=*/false);
    address = closed.address();
  }
  UnavailableDiagnosis nobody(address, "", SiteA(), absl::ZeroDuration(), absl::Milliseconds(10));
  std::string seen;
  EXPECT_TRUE(nobody.Diagnose(&seen).ok());
  EXPECT_THAT(seen, AllOf(HasSubstr("TLS probe: cannot connect to"), HasSubstr("Connection refused")));
}

TEST(SplitHostPortTest, Forms) {
  std::string host, port;
  ASSERT_TRUE(SplitHostPort("dns:///localhost:50051", &host, &port).ok());
  EXPECT_EQ(host, "localhost");
  EXPECT_EQ(port, "50051");
  ASSERT_TRUE(SplitHostPort("[::1]:7", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, "7");
  EXPECT_FALSE(SplitHostPort("::1:7", &host, &port).ok());
  EXPECT_FALSE(SplitHostPort("host:", &host, &port).ok());
  EXPECT_FALSE(SplitHostPort("host:http", &host, &port).ok());
}

}  // namespace
}  // namespace fedprllm
