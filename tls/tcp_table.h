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
#include <map>
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
  // Milliseconds since data last arrived (TCP_INFO), for this process's own sockets when
  // AddReceiveRecency ran; -1 if unknown.
  int64_t ms_since_receive = -1;
};

// Parses the text of /proc/net/tcp or /proc/net/tcp6 (header line included). Lines that do
// not parse are skipped.
std::vector<TcpEntry> ParseProcNetTcp(const std::string& text);

// Both tables of this network namespace; empty if /proc cannot be read.
std::vector<TcpEntry> ReadTcpTable();

// The sockets this process has descriptors for: inode -> descriptor.
std::map<uint64_t, int> OwnSocketInodes();

// The entries of `table` that are connections this process accepted and has open
// (ESTABLISHED or CLOSE_WAIT, on the port of one of its own LISTEN sockets).
std::vector<TcpEntry> AcceptedConnections(const std::vector<TcpEntry>& table, const std::map<uint64_t, int>& own);

// Sets ms_since_receive of the entries whose inode is in `own`, from TCP_INFO on its
// descriptor.
void AddReceiveRecency(const std::map<uint64_t, int>& own, std::vector<TcpEntry>* entries);

// Remote addresses of the connections in `before` that this side has closed since (now
// FIN_WAIT1/2, CLOSING, TIME_WAIT, LAST_ACK, CLOSE, or gone from `now`).
std::vector<std::string> ClosedSince(const std::vector<TcpEntry>& before, const std::vector<TcpEntry>& now);

// The remote addresses most likely to be the connection whose handshake failed at the time
// `open_then` was read: those of ClosedSince(open_then, now) not in `exclude`, narrowed to
// the ones that had received data within `recent_ms` then, if any had.
std::vector<std::string> FailedConnectionCandidates(const std::vector<TcpEntry>& open_then,
                                                    const std::vector<TcpEntry>& now,
                                                    const std::set<std::string>& exclude, int64_t recent_ms);

}  // namespace fedprllm
