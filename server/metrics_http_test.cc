// MetricsHttpServer over real loopback sockets: what it answers to good, odd and hostile
// requests, and that it stops promptly whatever its clients do.
#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/http_get.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A server on 127.0.0.1:<free port> whose page says how many times it was rendered.
class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
        MetricsHttpServer::Start("127.0.0.1", 0, "/metrics", [this] { return absl::StrCat("renders ", ++renders_, "\n"); });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
  }

  absl::StatusOr<std::string> Exchange(const std::string& request) {
    return e2e::HttpExchange("127.0.0.1", server_->port(), request, 5.0);
  }

  std::atomic<int> renders_{0};
  std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttpServerTest, GetRendersThePageEachTime) {
  for (int i = 1; i <= 3; ++i) {
    absl::StatusOr<e2e::HttpResponse> response = e2e::HttpGetResponse("127.0.0.1", server_->port(), "/metrics");
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status_code, 200);
    EXPECT_EQ(response->body, absl::StrCat("renders ", i, "\n"));
    EXPECT_EQ(response->headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_EQ(response->headers["content-length"], std::to_string(response->body.size()));
    EXPECT_EQ(response->headers["connection"], "close");
  }
}

TEST_F(MetricsHttpServerTest, QueryStringIsIgnoredAndHttp11Works) {
  absl::StatusOr<std::string> raw =
      Exchange("GET /metrics?name[]=x HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n");
  ASSERT_TRUE(raw.ok()) << raw.status();
  absl::StatusOr<e2e::HttpResponse> response = e2e::ParseHttpResponse(*raw);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status_code, 200);
  EXPECT_EQ(response->body, "renders 1\n");  // identity encoding whatever the client accepts
}

TEST_F(MetricsHttpServerTest, OtherPathIsNotFoundAndNotRendered) {
  for (const std::string path : {"/", "/metricsx", "/metrics/", "/METRICS"}) {
    absl::StatusOr<e2e::HttpResponse> response = e2e::HttpGetResponse("127.0.0.1", server_->port(), path);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status_code, 404) << path;
  }
  EXPECT_EQ(renders_, 0);
}

TEST_F(MetricsHttpServerTest, HeadHasHeadersOnly) {
  absl::StatusOr<std::string> raw = Exchange("HEAD /metrics HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_THAT(*raw, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(*raw, HasSubstr("Content-Length: 10\r\n"));  // "renders 1\n"
  EXPECT_EQ(raw->substr(raw->size() - 4), "\r\n\r\n");     // and nothing after the headers
}

TEST_F(MetricsHttpServerTest, OtherMethodIsNotAllowed) {
  absl::StatusOr<std::string> raw = Exchange("POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_THAT(*raw, StartsWith("HTTP/1.1 405 Method Not Allowed\r\n"));
  EXPECT_THAT(*raw, HasSubstr("Allow: GET, HEAD\r\n"));
  EXPECT_EQ(renders_, 0);
}

TEST_F(MetricsHttpServerTest, GarbageIsBadRequest) {
  for (const std::string request : {"hello\r\n\r\n", "GET /metrics\r\n\r\n", "GET /metrics SPDY/3\r\n\r\n",
                                    "GET  /metrics HTTP/1.0\r\n\r\n"}) {
    absl::StatusOr<std::string> raw = Exchange(request);
    ASSERT_TRUE(raw.ok()) << raw.status();
    EXPECT_THAT(*raw, StartsWith("HTTP/1.1 400 Bad Request\r\n")) << request;
  }
  EXPECT_EQ(renders_, 0);
}

TEST_F(MetricsHttpServerTest, OversizedRequestIsRefused) {
  const std::string request =
      absl::StrCat("GET /metrics HTTP/1.0\r\nX-Pad: ", std::string(MetricsHttpServer::kMaxRequestBytes, 'p'), "\r\n\r\n");
  absl::StatusOr<std::string> raw = Exchange(request);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_THAT(*raw, StartsWith("HTTP/1.1 431 "));
  EXPECT_EQ(renders_, 0);
  // The server is still there for the next client.
  EXPECT_TRUE(e2e::HttpGet("127.0.0.1", server_->port(), "/metrics").ok());
}

// A raw client socket connected to 127.0.0.1:`port`; closed by the destructor.
class IdleClient {
 public:
  explicit IdleClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~IdleClient() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }
  void Send(const std::string& bytes) { (void)!send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL); }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

TEST_F(MetricsHttpServerTest, StopsPromptlyWithAStalledClient) {
  IdleClient stalled(server_->port());
  ASSERT_TRUE(stalled.connected());
  stalled.Send("GET /metr");  // half a request line, then nothing
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the server start reading it
  const auto start = std::chrono::steady_clock::now();
  server_.reset();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 0.5);
}

TEST_F(MetricsHttpServerTest, StalledClientIsDroppedAfterTheConnectionTimeout) {
  IdleClient stalled(server_->port());
  ASSERT_TRUE(stalled.connected());
  const auto start = std::chrono::steady_clock::now();
  // Served after the stalled connection's timeout, not never.
  absl::StatusOr<std::string> body = e2e::HttpGet("127.0.0.1", server_->port(), "/metrics", 15.0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "renders 1\n");
  EXPECT_GE(seconds, MetricsHttpServer::kConnectionTimeoutMs / 1000.0 - 0.5);
  EXPECT_LT(seconds, MetricsHttpServer::kConnectionTimeoutMs / 1000.0 + 3.0);
}

TEST(MetricsHttpServerStartTest, PortInUseIsUnavailableWithTheReason) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> first =
      MetricsHttpServer::Start("127.0.0.1", 0, "/metrics", [] { return std::string(); });
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start("127.0.0.1", (*first)->port(), "/metrics", [] { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("Address already in use"));
  EXPECT_THAT(second.status().message(), HasSubstr(absl::StrCat("127.0.0.1:", (*first)->port())));
}

TEST(MetricsHttpServerStartTest, BadPortOrHostIsInvalidArgument) {
  for (int port : {-1, 65536}) {
    EXPECT_EQ(MetricsHttpServer::Start("127.0.0.1", port, "/m", [] { return std::string(); }).status().code(),
              absl::StatusCode::kInvalidArgument)
        << port;
  }
  EXPECT_EQ(MetricsHttpServer::Start("no-such-host.invalid", 0, "/m", [] { return std::string(); }).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsHttpServerStartTest, ServesOnIpv6Loopback) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start("::1", 0, "/metrics", [] { return std::string("six\n"); });
  if (!server.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << server.status();
  absl::StatusOr<std::string> body = e2e::HttpGet("::1", (*server)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "six\n");
}

}  // namespace
}  // namespace fedprllm
