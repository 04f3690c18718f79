// CheckHealth against an in-process gRPC server on 127.0.0.1 running gRPC's default health
// service (the one fedprllm-server enables), with statuses set the way the server sets them.
#include "proto/health_client.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace fedprllm {
namespace {

constexpr char kService[] = "fedprllm.v1.FedPrLLM";

// A plaintext server on 127.0.0.1:<free port> with or without the default health service.
// EnableDefaultHealthCheckService is process-global and read when a server is built, so
// the flag is set just before building and put back to `true` after.
class HealthServer {
 public:
  explicit HealthServer(bool with_health_service) {
    grpc::EnableDefaultHealthCheckService(with_health_service);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterCallbackGenericService(&generic_);  // a server needs one service
    server_ = builder.BuildAndStart();
    grpc::EnableDefaultHealthCheckService(true);
  }
  ~HealthServer() {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  bool ok() const { return server_ != nullptr && port_ > 0; }
  grpc::Server* server() { return server_.get(); }
  std::shared_ptr<grpc::Channel> Channel() const {
    return grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials());
  }

 private:
  grpc::CallbackGenericService generic_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST(CheckHealthTest, WholeServerIsServingOnceStarted) {
  HealthServer server(true);
  ASSERT_TRUE(server.ok());
  absl::StatusOr<std::string> status = CheckHealth(server.Channel(), "", 5.0);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, "SERVING");
}

TEST(CheckHealthTest, NamedServiceFollowsSetServingStatus) {
  HealthServer server(true);
  ASSERT_TRUE(server.ok());
  grpc::HealthCheckServiceInterface* health = server.server()->GetHealthCheckService();
  ASSERT_NE(health, nullptr);
  auto channel = server.Channel();

  health->SetServingStatus(kService, true);
  absl::StatusOr<std::string> status = CheckHealth(channel, kService, 5.0);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, "SERVING");

  health->SetServingStatus(kService, false);
  status = CheckHealth(channel, kService, 5.0);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, "NOT_SERVING");
  // The named service going down leaves the whole server's status alone.
  status = CheckHealth(channel, "", 5.0);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, "SERVING");

  // The all-services form (what a shutting-down server calls) takes "" down too.
  health->SetServingStatus(true);
  health->SetServingStatus(false);
  status = CheckHealth(channel, "", 5.0);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, "NOT_SERVING");
  status = CheckHealth(channel, kService, 5.0);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, "NOT_SERVING");
}

TEST(CheckHealthTest, UnknownServiceIsNotFound) {
  HealthServer server(true);
  ASSERT_TRUE(server.ok());
  server.server()->GetHealthCheckService()->SetServingStatus(kService, true);
  absl::StatusOr<std::string> status = CheckHealth(server.Channel(), "no.such.Service", 5.0);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.status().code(), absl::StatusCode::kNotFound) << status.status();
  EXPECT_NE(status.status().message().find("'no.such.Service'"), std::string::npos) << status.status();
}

TEST(CheckHealthTest, ServerWithoutHealthServiceIsUnimplemented) {
  HealthServer server(false);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(server.server()->GetHealthCheckService(), nullptr);
  absl::StatusOr<std::string> status = CheckHealth(server.Channel(), "", 5.0);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.status().code(), absl::StatusCode::kUnimplemented) << status.status();
}

TEST(CheckHealthTest, NoServerTimesOut) {
  // Port 1 on loopback: nothing listens there, so the channel never becomes ready and
  // wait_for_ready keeps the call pending until the deadline.
  auto channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> status = CheckHealth(channel, "", 0.3);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.status().code(), absl::StatusCode::kDeadlineExceeded) << status.status();
  EXPECT_GE(waited, 0.25);
  EXPECT_LT(waited, 5.0);
}

TEST(CheckHealthTest, NonPositiveTimeoutIsInvalidArgument) {
  auto channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  for (double timeout : {0.0, -1.0, std::nan("")}) {
    absl::StatusOr<std::string> status = CheckHealth(channel, "", timeout);
    ASSERT_FALSE(status.ok()) << timeout;
    EXPECT_EQ(status.status().code(), absl::StatusCode::kInvalidArgument) << timeout;
  }
}

}  // namespace
}  // namespace fedprllm
