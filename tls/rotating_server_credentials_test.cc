// RotatingServerCredentials: a server on loopback presents its certificate and requires a
// client certificate; after Rotate, new connections see the new certificate, and files that
// fail the check change nothing.
#include "tls/rotating_server_credentials.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tls/revocation_list.h"
#include "tls/test_certs.h"
#include "tls/test_server.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;
using testing::ReadAll;
using testing::TestCerts;

::testing::Environment* const kMakeCertificatesFirst =
    ::testing::AddGlobalTestEnvironment(new testing::MakeCertificatesFirst);

TlsFiles ServerFiles(const std::string& cert = "server.crt", const std::string& key = "server.key") {
  const TestCerts& c = TestCerts::Get();
  return TlsFiles{c.Path(cert), c.Path(key), c.Path("ca.crt")};
}

// A second server certificate from the same CA (serial 0x99, a new key), made once.
void MakeRotatedServerCertificate() {
  static const bool made = testing::MakeServerCertificate(TestCerts::Get().dir(), "next", "99");
  ASSERT_TRUE(made) << ReadAll(TestCerts::Get().Path("next.log"));
}

// The serial of the certificate the server presents to a new connection from site-a, "" if
// the handshake fails.
std::string PresentedSerial(int port, bool with_client_certificate = true) {
  const TestCerts& c = TestCerts::Get();
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ReadAll(c.Path("ca.crt"));
  if (with_client_certificate) {
    tls.pem_private_key = ReadAll(c.Path("site-a.key"));
    tls.pem_cert_chain = ReadAll(c.Path("site-a.crt"));
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a new connection per channel
  auto channel = grpc::CreateCustomChannel("localhost:" + std::to_string(port), grpc::SslCredentials(tls), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(2))) return "";
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  grpc::Status status;
  std::mutex mu;
  std::condition_variable done;
  bool finished = false;
  stub.UnaryCall(&context, "/test.Nothing/Call", grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    finished = true;
    done.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  done.wait(lock, [&] { return finished; });
  if (status.error_code() != grpc::StatusCode::UNIMPLEMENTED) return "";
  const std::vector<grpc::string_ref> pems = context.auth_context()->FindPropertyValues("x509_pem_cert");
  return pems.empty() ? "" : CertificateSerialHex(std::string(pems.front().data(), pems.front().size()));
}

TEST(RotatingServerCredentialsTest, NewConnectionsSeeTheRotatedCertificate) {
  MakeRotatedServerCertificate();
  auto tls = RotatingServerCredentials::Create(ServerFiles());
  ASSERT_TRUE(tls.ok()) << tls.status();
  testing::TestGrpcServer server((*tls)->credentials());
  ASSERT_GT(server.port(), 0);
  const std::string first = CertificateSerialHex(ReadAll(TestCerts::Get().Path("server.crt")));
  EXPECT_EQ(PresentedSerial(server.port()), first);
  // The client certificate is required.
  EXPECT_EQ(PresentedSerial(server.port(), /*with_client_certificate=*/false), "");

  absl::StatusOr<std::string> rotated = (*tls)->Rotate(ServerFiles("next.crt", "next.key"));
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_THAT(*rotated, HasSubstr("now certificate CN=localhost serial 99"));
  EXPECT_THAT(*rotated, HasSubstr("CA bundle unchanged"));
  std::string seen;
  for (int i = 0; i < 50 && seen != "99"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = PresentedSerial(server.port());
  }
  EXPECT_EQ(seen, "99");

  // The same files again: nothing to publish.
  rotated = (*tls)->Rotate(ServerFiles("next.crt", "next.key"));
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_THAT(*rotated, HasSubstr("unchanged certificate"));
}

TEST(RotatingServerCredentialsTest, FilesThatFailTheCheckAreNotPublished) {
  MakeRotatedServerCertificate();
  auto tls = RotatingServerCredentials::Create(ServerFiles());
  ASSERT_TRUE(tls.ok()) << tls.status();
  testing::TestGrpcServer server((*tls)->credentials());
  const std::string first = CertificateSerialHex(ReadAll(TestCerts::Get().Path("server.crt")));

  // A key that is not the certificate's; a client certificate for the server role.
  absl::StatusOr<std::string> rotated = (*tls)->Rotate(ServerFiles("next.crt", "server.key"));
  EXPECT_FALSE(rotated.ok());
  EXPECT_THAT(rotated.status().message(), HasSubstr("tls.key"));
  rotated = (*tls)->Rotate(ServerFiles("site-a.crt", "site-a.key"));
  EXPECT_FALSE(rotated.ok());
  EXPECT_EQ((*tls)->published_certificate(), ReadAll(TestCerts::Get().Path("server.crt")));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(PresentedSerial(server.port()), first);
}

TEST(RotatingServerCredentialsTest, TheCopyIsPrivateAndRemoved) {
  std::string dir;
  {
    auto tls = RotatingServerCredentials::Create(ServerFiles());
    ASSERT_TRUE(tls.ok()) << tls.status();
    dir = (*tls)->directory();
    ASSERT_FALSE(dir.empty());
    EXPECT_EQ(std::filesystem::status(dir).permissions() & std::filesystem::perms::all, std::filesystem::perms::owner_all);
    EXPECT_EQ(std::filesystem::status(dir + "/live/key.pem").permissions() & std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    EXPECT_EQ(ReadAll(dir + "/live/key.pem"), ReadAll(TestCerts::Get().Path("server.key")));
  }
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(RotatingServerCredentialsTest, CreateReportsABadFile) {
  auto tls = RotatingServerCredentials::Create(ServerFiles("garbage.pem"));
  ASSERT_FALSE(tls.ok());
  EXPECT_THAT(tls.status().message(), HasSubstr("tls.cert"));
}

}  // namespace
}  // namespace fedprllm
