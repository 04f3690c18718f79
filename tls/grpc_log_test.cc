// GrpcLogRouter: gRPC 1.51's handshake-failure lines parsed and explained; the peer named
// from the socket table (a fake one, then the real one with a real gRPC server and a probe
// presenting a rogue certificate); repeats counted instead of logged; other gRPC lines
// passed through at their level.
#include "tls/grpc_log.h"

#include <grpc/support/log.h>

#include <regex>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tls/server_probe.h"
#include "tls/test_certs.h"
#include "tls/test_server.h"
#include "tls/test_tcp_entries.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using testing::TestCerts;
using testing::TestGrpcServer;

// What gRPC 1.51 logs, verbatim (ssl_transport_security.cc:1501, and :1934 on the server
// when a client's SNI names a host its certificate lacks).
const char kVerifyFailed[] =
    "Handshake failed with fatal error SSL_ERROR_SSL: error:0A000086:SSL routines::certificate verify failed.";
const char kNoMatch[] = "No match found for server name: other.example.";

struct Line {
  spdlog::level::level_enum level;
  std::string text;
};

// Collects emitted lines.
class Capture {
 public:
  std::function<void(spdlog::level::level_enum, const std::string&)> Sink() {
    return [this](spdlog::level::level_enum level, const std::string& text) {
      absl::MutexLock lock(&mu_);
      lines_.push_back({level, text});
    };
  }
  std::vector<Line> lines() {
    absl::MutexLock lock(&mu_);
    return lines_;
  }
  std::vector<std::string> texts() {
    std::vector<std::string> out;
    for (const Line& l : lines()) out.push_back(l.text);
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<Line> lines_ ABSL_GUARDED_BY(mu_);
};

TEST(ParseHandshakeFailureTest, Grpc151Lines) {
  auto f = ParseHandshakeFailure(kVerifyFailed);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->openssl_reason, "certificate verify failed");
  EXPECT_EQ(f->expected_name, "");
  f = ParseHandshakeFailure(kNoMatch);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->expected_name, "other.example");
  f = ParseHandshakeFailure(
      "Handshake failed with fatal error SSL_ERROR_SSL: error:0A000418:SSL routines::tlsv1 alert unknown ca.");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->openssl_reason, "tlsv1 alert unknown ca");
  EXPECT_FALSE(ParseHandshakeFailure("grpc epoll fd: 3").has_value());
}

TEST(ParseHandshakeFailureTest, Explanations) {
  HandshakeFailure verify{"certificate verify failed", ""};
  EXPECT_THAT(ExplainHandshakeFailure(verify, TlsRole::kServer),
              HasSubstr("the client's certificate does not verify against this server's tls.ca"));
  EXPECT_THAT(ExplainHandshakeFailure(verify, TlsRole::kClient),
              HasSubstr("the server's certificate does not verify against this site's tls.ca"));
  EXPECT_THAT(ExplainHandshakeFailure({"tlsv1 alert unknown ca", ""}, TlsRole::kServer),
              HasSubstr("the client does not trust this side's certificate"));
  EXPECT_THAT(ExplainHandshakeFailure({"peer did not return a certificate", ""}, TlsRole::kServer),
              HasSubstr("the client sent no certificate"));
  EXPECT_THAT(ExplainHandshakeFailure({"wrong version number", ""}, TlsRole::kServer), HasSubstr("does not speak TLS"));
  EXPECT_THAT(ExplainHandshakeFailure({"", "x.example"}, TlsRole::kClient), HasSubstr("name \"x.example\""));
}

using testing::MakeTcpEntry;

TEST(GrpcLogRouterTest, NamesTheConnectionTheServerClosed) {
  Capture capture;
  // Reads of the table: the first at the log line (two clients connected), later ones after
  // the server closed 127.0.0.1:40001's connection.
  const std::vector<TcpEntry> before = {MakeTcpEntry("127.0.0.1:50051", "0.0.0.0:0", kTcpListen, 1),
                                        MakeTcpEntry("127.0.0.1:50051", "127.0.0.1:40001", kTcpEstablished, 2),
                                        MakeTcpEntry("127.0.0.1:50051", "127.0.0.1:40002", kTcpEstablished, 3),
                                        MakeTcpEntry("127.0.0.1:40003", "127.0.0.1:50051", kTcpEstablished, 4)};
  std::vector<TcpEntry> after = before;
  after[1].state = kTcpFinWait2;
  after[1].inode = 0;
  after[3].state = kTcpCloseWait;  // an outgoing connection: never a candidate
  absl::Mutex mu;
  int reads = 0;
  GrpcLogOptions options;
  options.emit = capture.Sink();
  options.attribution_delay = absl::Milliseconds(50);
  options.read_table = [&] {
    absl::MutexLock lock(&mu);
    return reads++ == 0 ? before : after;
  };
  options.own_inodes = [] { return std::map<uint64_t, int>{{1, -1}, {2, -1}, {3, -1}, {4, -1}}; };
  GrpcLogRouter router(options);
  router.Handle(GPR_LOG_SEVERITY_ERROR, "./src/core/tsi/ssl_transport_security.cc", 1501, kVerifyFailed);
  router.Drain();
  const std::vector<Line> lines = capture.lines();
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_EQ(lines[0].level, spdlog::level::warn);
  EXPECT_EQ(lines[0].text,
            "TLS handshake with client 127.0.0.1:40001 failed: the client's certificate does not verify against this "
            "server's tls.ca (signed by another CA, expired, or not a client certificate) [OpenSSL: certificate "
            "verify failed]");
}

TEST(GrpcLogRouterTest, RepeatsAreCountedNotLogged) {
  Capture capture;
  GrpcLogOptions options;
  options.role = TlsRole::kClient;
  options.server_address = "127.0.0.1:50051";
  options.emit = capture.Sink();
  options.repeat_window = absl::Milliseconds(400);
  GrpcLogRouter router(options);
  for (int i = 0; i < 6; ++i) router.Handle(GPR_LOG_SEVERITY_ERROR, "t.cc", 1, kVerifyFailed);
  EXPECT_THAT(capture.texts(), ElementsAre(HasSubstr("TLS handshake with server 127.0.0.1:50051 failed: the server's "
                                                     "certificate does not verify against this site's tls.ca")));
  // The worker reports the 5 left out once the window has passed.
  absl::SleepFor(absl::Milliseconds(900));
  const std::vector<std::string> texts = capture.texts();
  ASSERT_THAT(texts, SizeIs(2));
  EXPECT_THAT(texts[1], AllOf(HasSubstr("TLS handshake with server 127.0.0.1 failed"),
                              HasSubstr(": 5 more in the last"), HasSubstr("were not logged")));
  // After the summary, the next failure is logged in full again.
  router.Handle(GPR_LOG_SEVERITY_ERROR, "t.cc", 1, kVerifyFailed);
  EXPECT_THAT(capture.texts(), SizeIs(3));
}

TEST(GrpcLogRouterTest, SniMismatchIsLoggedAtOnceWithoutLookingForAPeer) {
  Capture capture;
  GrpcLogOptions options;
  options.emit = capture.Sink();
  options.read_table = [] {
    ADD_FAILURE() << "the SNI line names no failing connection; no table read expected";
    return std::vector<TcpEntry>{};
  };
  GrpcLogRouter router(options);
  router.Handle(GPR_LOG_SEVERITY_ERROR, "t.cc", 1934, kNoMatch);
  router.Handle(GPR_LOG_SEVERITY_ERROR, "t.cc", 1934, kNoMatch);
  router.Drain();
  EXPECT_THAT(capture.texts(),
              ElementsAre(AllOf(HasSubstr("TLS: a client asked for server name \"other.example\" "
                                          "(TLS SNI), which this server's certificate does not carry"))));
}

TEST(GrpcLogRouterTest, OtherLinesKeepTheirLevel) {
  Capture capture;
  GrpcLogOptions options;
  options.emit = capture.Sink();
  options.repeat_window = absl::Seconds(60);
  GrpcLogRouter router(options);
  router.Handle(GPR_LOG_SEVERITY_DEBUG, "./src/core/a.cc", 1, "d");
  router.Handle(GPR_LOG_SEVERITY_INFO, "./src/core/a.cc", 2, "i");
  for (int i = 0; i < 8; ++i) router.Handle(GPR_LOG_SEVERITY_ERROR, "./src/core/a.cc", 3, "e");
  const std::vector<Line> lines = capture.lines();
  ASSERT_THAT(lines, SizeIs(2 + 5));  // 5 lines per file:line and window
  EXPECT_EQ(lines[0].level, spdlog::level::debug);
  EXPECT_EQ(lines[0].text, "grpc: d [core/a.cc:1]");
  EXPECT_EQ(lines[1].level, spdlog::level::info);
  EXPECT_EQ(lines[6].level, spdlog::level::err);
  EXPECT_EQ(lines[6].text, "grpc: e [core/a.cc:3]");
}

// Routes this process's gpr_log lines to the router of the running test.
GrpcLogRouter* g_test_router = nullptr;
void ToTestRouter(gpr_log_func_args* args) {
  if (g_test_router != nullptr) g_test_router->Handle(args->severity, args->file, args->line, args->message);
}

TEST(GrpcLogRouterTest, RealServerNamesTheRefusedPeer) {
  const TestCerts& certs = TestCerts::Get();
  TestGrpcServer server(certs.dir());
  ASSERT_TRUE(server.ok());
  Capture capture;
  GrpcLogOptions options;
  options.emit = capture.Sink();
  GrpcLogRouter router(options);
  g_test_router = &router;
  gpr_set_log_function(ToTestRouter);
  const absl::Status s =
      ProbeServer(server.address(), "",
                  TlsFiles{certs.Path("rogue/mallory.crt"), certs.Path("rogue/mallory.key"), certs.Path("ca.crt")});
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  std::smatch m;
  const std::string message(s.message());
  ASSERT_TRUE(std::regex_search(message, m, std::regex("end of the connection: (127\\.0\\.0\\.1:[0-9]+)")));
  const std::string probe_end = m[1];
  absl::SleepFor(absl::Milliseconds(100));  // the server logs on its own thread
  router.Drain();
  g_test_router = nullptr;
  std::vector<std::string> failures;
  for (const std::string& t : capture.texts()) {
    if (t.find("TLS handshake") != std::string::npos) failures.push_back(t);
  }
  EXPECT_THAT(failures, ElementsAre(AllOf(HasSubstr("TLS handshake with client " + probe_end + " failed: "),
                                          HasSubstr("the client's certificate does not verify"))));
}

}  // namespace
}  // namespace fedprllm
