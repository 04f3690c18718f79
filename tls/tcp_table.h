// This process's TCP connections as Linux lists them (/proc/net/tcp{,6}, /proc/self/fd),
// for naming the peer of a failed TLS handshake: gRPC 1.51 logs the failure without the
// peer's address, but the failing connection is one of this process's accepted
// connections at the moment of the log line, and the one this side closes right after it.
//
//   std::vector<TcpEntry> before = AcceptedConnections(ReadTcpTable(), OwnSocketInodes());
//   ... 300 ms later ...
//   std::vector<std::string> peers = ClosedSince(before, ReadTcpTable());
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace fedprllm {

// Kernel TCP states as /proc/net/tcp prints them (include/net/tcp_states.h).
enum TcpState : int {
  kTcpEstablished = 1,
  kTcpSynSent = 2,
  kTcpSynRecv = 3,
  kTcpFinWait1 = 4,
  kTcpFinWait2 = 5,
  kTcpTimeWait = 6,
  kTcpClose = 7,
  kTcpCloseWait = 8,
  kTcpLastAck = 9,
  kTcpListen = 10,
  kTcpClosing = 11,
};

struct TcpEntry {
  std::string local;   // "127.0.0.1:50051", "[::1]:50051"; IPv4-mapped IPv6 prints as IPv4
  std::string remote;  // same form
  int local_port = 0;
  int state = 0;       // TcpState
  uint64_t inode = 0;  // 0 once no descriptor refers to the socket
};

// Parses the text of /proc/net/tcp or /proc/net/tcp6 (header line included). Lines that do
// not parse are skipped.
std::vector<TcpEntry> ParseProcNetTcp(const std::string& text);

// Both tables of this network namespace; empty if /proc cannot be read.
std::vector<TcpEntry> ReadTcpTable();

// Inodes of the sockets this process has descriptors for.
std::set<uint64_t> OwnSocketInodes();

// The entries of `table` that are connections this process accepted and has open
// (ESTABLISHED or CLOSE_WAIT, on the port of one of its own LISTEN sockets).
std::vector<TcpEntry> AcceptedConnections(const std::vector<TcpEntry>& table, const std::set<uint64_t>& own);

// Remote addresses of the connections in `before` that this side has closed since (now
// FIN_WAIT1/2, CLOSING, TIME_WAIT, LAST_ACK, CLOSE, or gone from `now`).
std::vector<std::string> ClosedSince(const std::vector<TcpEntry>& before, const std::vector<TcpEntry>& now);

}  // namespace fedprllm
