// The socket-table reading behind naming a failed handshake's peer: /proc/net/tcp{,6}
// text, the connections this side closed, and the choice among several.
#include "tls/tcp_table.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tls/test_tcp_entries.h"

namespace fedprllm {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

using testing::MakeTcpEntry;

TEST(TcpTableTest, ParsesProcNetTcp) {
  const std::string v4 =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 0100007F:C383 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 "
      "0\n"
      "   1: 0100007F:C383 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0 20 4 30 10 "
      "-1\n";
  const std::vector<TcpEntry> e = ParseProcNetTcp(v4);
  ASSERT_THAT(e, SizeIs(2));
  EXPECT_EQ(e[0].local, "127.0.0.1:50051");
  EXPECT_EQ(e[0].state, kTcpListen);
  EXPECT_EQ(e[1].remote, "127.0.0.1:40001");
  EXPECT_EQ(e[1].inode, 4243u);
  const std::string v6 =
      "  sl  local_address                         remote_address                        st tx_queue rx_queue tr "
      "tm->when retrnsmt   uid  timeout inode\n"
      "   0: 0000000000000000FFFF00000100007F:C383 0000000000000000FFFF00000100007F:9C42 06 00000000:00000000 "
      "03:00000F9E 00000000     0        0 0 3 0000000000000000\n"
      "   1: 00000000000000000000000001000000:C383 00000000000000000000000001000000:9C43 01 00000000:00000000 "
      "00:00000000 00000000     0        0 77 1 0 20 4 30 10 -1\n";
  const std::vector<TcpEntry> e6 = ParseProcNetTcp(v6);
  ASSERT_THAT(e6, SizeIs(2));
  EXPECT_EQ(e6[0].remote, "127.0.0.1:40002");  // IPv4-mapped
  EXPECT_EQ(e6[0].state, kTcpTimeWait);
  EXPECT_EQ(e6[1].remote, "[::1]:40003");
  EXPECT_THAT(ClosedSince({e[1]}, e), IsEmpty());
  EXPECT_THAT(ClosedSince({e[1]}, {e[0]}), ElementsAre("127.0.0.1:40001"));
}

TEST(TcpTableTest, CandidatesPreferTheConnectionThatJustReceived) {
  std::vector<TcpEntry> open_then = {MakeTcpEntry("127.0.0.1:50051", "127.0.0.1:40001", kTcpCloseWait, 2),
                                     MakeTcpEntry("127.0.0.1:50051", "127.0.0.1:40002", kTcpEstablished, 3),
                                     MakeTcpEntry("127.0.0.1:50051", "127.0.0.1:40003", kTcpEstablished, 4)};
  open_then[0].ms_since_receive = 1300;              // a client that hung up a while ago
  open_then[1].ms_since_receive = 2;                 // the failing handshake's last bytes
  open_then[2].ms_since_receive = 5;                 // busy, and stays open
  const std::vector<TcpEntry> now = {open_then[2]};  // 40001 and 40002 are gone
  EXPECT_THAT(FailedConnectionCandidates(open_then, now, {}, 250), ElementsAre("127.0.0.1:40002"));
  EXPECT_THAT(FailedConnectionCandidates(open_then, now, {"127.0.0.1:40002"}, 250), ElementsAre("127.0.0.1:40001"));
  open_then[1].ms_since_receive = -1;  // unknown: both closed ones remain
  EXPECT_THAT(FailedConnectionCandidates(open_then, now, {}, 250), ElementsAre("127.0.0.1:40001", "127.0.0.1:40002"));
}

TEST(TcpTableTest, FindsAnAcceptedLoopbackConnectionAndItsClose) {
  // A listener, a client and the accepted end, all in this process, on 127.0.0.1.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const int accepted = ::accept(listener, nullptr, nullptr);
  ASSERT_GE(accepted, 0);
  sockaddr_in c{};
  len = sizeof(c);
  ASSERT_EQ(::getsockname(client, reinterpret_cast<sockaddr*>(&c), &len), 0);
  const std::string client_end = "127.0.0.1:" + std::to_string(ntohs(c.sin_port));
  ASSERT_EQ(::send(client, "x", 1, 0), 1);
  char byte;
  ASSERT_EQ(::recv(accepted, &byte, 1, 0), 1);

  const std::map<uint64_t, int> own = OwnSocketInodes();
  std::vector<TcpEntry> open = AcceptedConnections(ReadTcpTable(), own);
  ASSERT_THAT(open, SizeIs(1));  // the client's end is not on a listening port
  EXPECT_EQ(open[0].remote, client_end);
  AddReceiveRecency(own, &open);
  EXPECT_GE(open[0].ms_since_receive, 0);
  EXPECT_LT(open[0].ms_since_receive, 5000);
  EXPECT_THAT(ClosedSince(open, ReadTcpTable()), IsEmpty());
  ::close(accepted);  // this side closes first: FIN_WAIT
  EXPECT_THAT(ClosedSince(open, ReadTcpTable()), ElementsAre(client_end));
  ::close(client);
  ::close(listener);
}

}  // namespace
}  // namespace fedprllm
