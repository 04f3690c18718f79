// Unit tests of the transport bounds that need no running server: the upload message cap,
// the memory quota and its config keys, and the listen error for a port in use.
#include "server/transport_limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/test_server_config.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

using testing::kMinimalServerYaml;

TEST(MaxUploadMessagesTest, CoversEverySplitOfAnHonestUpload) {
  // Two tensors: 64x64 (512 raw bytes) and 1000x1000 (125,000 raw bytes).
  const std::map<std::string, std::vector<int64_t>> tensors = {{"a", {64, 64}}, {"b", {1000, 1000}}};
  // 2 headers + 2 partial last chunks + ceil(125,512 / 4,096) = 31 full chunks + slack.
  EXPECT_EQ(MaxUploadMessages(tensors, 4096), 2 + 2 + 31 + kUploadMessageSlack);
  // One payload of both (1 header + 31 chunks) and one payload each (2 headers + 1 + 31
  // chunks) both fit.
  EXPECT_GE(MaxUploadMessages(tensors, 4096), 1 + 31);
  EXPECT_GE(MaxUploadMessages(tensors, 4096), 2 + 1 + 31);
  // Padding bits count: 9 weights take 2 raw bytes.
  EXPECT_EQ(MaxUploadMessages({{"c", {9}}}, 1), 1 + 1 + 2 + kUploadMessageSlack);
  EXPECT_EQ(MaxUploadMessages({}, 4096), kUploadMessageSlack);
}

TEST(TransportLimitsTest, QuotaAndIdleTimeoutKeys) {
  auto c = ParseServerConfig(kMinimalServerYaml, "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->upload_idle_timeout_seconds, 60);
  EXPECT_EQ(c->transport_memory_bytes, 0);
  EXPECT_EQ(TransportMemoryQuotaBytes(*c), (int64_t{64} << 20) + 3 * 4 * (int64_t{1} << 20));
  EXPECT_EQ(MaxReceiveMessageBytes(*c), (1 << 20) + 64 * 1024);
  auto set = ParseServerConfig(std::string(kMinimalServerYaml) + "transport_memory_bytes: 33554432\n", "t.yaml");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(TransportMemoryQuotaBytes(*set), int64_t{32} << 20);
  for (const char* bad : {"transport_memory_bytes: 1000", "transport_memory_bytes: 99999999999999",
                          "upload_idle_timeout_seconds: 0", "upload_idle_timeout_seconds: 3601"}) {
    auto r = ParseServerConfig(std::string(kMinimalServerYaml) + bad + "\n", "t.yaml");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr(std::string(bad).substr(0, std::string(bad).find(':')))) << bad;
  }
}

TEST(ListenErrorTest, NamesAPortThatIsInUse) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  const absl::Status in_use = ListenError(address);
  EXPECT_THAT(in_use.message(), HasSubstr(absl::StrCat("cannot listen on ", address,
                                                       " (config key 'listen_address'): address already in use")));
  ::close(fd);
  // Free now: the probe binds, so the message says why gRPC could not.
  EXPECT_THAT(ListenError(address).message(), HasSubstr("gRPC could not bind it"));
  EXPECT_THAT(ListenError("[::1]:65536").message(), HasSubstr("cannot listen on [::1]:65536"));
}

}  // namespace
}  // namespace fedprllm
