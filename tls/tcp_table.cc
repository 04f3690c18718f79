// Reading Linux's TCP socket tables for this process's accepted connections.
#include "tls/tcp_table.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fedprllm {
namespace {

// "0100007F:1F90" (IPv4) or 32 hex digits + ":PORT" (IPv6): each 32-bit word is printed
// as the host-order integer of its network-order bytes, so copying the parsed integer's
// bytes restores the address on either endianness.
bool ParseHexAddress(absl::string_view field, std::string* text, int* port) {
  const size_t colon = field.find(':');
  if (colon == absl::string_view::npos) return false;
  const absl::string_view hex = field.substr(0, colon);
  uint32_t port_value = 0;
  if (!absl::SimpleHexAtoi(field.substr(colon + 1), &port_value)) return false;
  if (hex.size() != 8 && hex.size() != 32) return false;
  unsigned char bytes[16];
  for (size_t w = 0; w < hex.size() / 8; ++w) {
    uint32_t word = 0;
    if (!absl::SimpleHexAtoi(hex.substr(w * 8, 8), &word)) return false;
    std::memcpy(bytes + 4 * w, &word, 4);
  }
  char buf[INET6_ADDRSTRLEN] = {};
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (hex.size() == 8) {
    inet_ntop(AF_INET, bytes, buf, sizeof(buf));
    *text = absl::StrCat(buf, ":", port_value);
  } else if (std::memcmp(bytes, kMapped, 12) == 0) {
    inet_ntop(AF_INET, bytes + 12, buf, sizeof(buf));
    *text = absl::StrCat(buf, ":", port_value);
  } else {
    inet_ntop(AF_INET6, bytes, buf, sizeof(buf));
    *text = absl::StrCat("[", buf, "]:", port_value);
  }
  *port = static_cast<int>(port_value);
  return true;
}

std::string ReadProcFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::vector<TcpEntry> ParseProcNetTcp(const std::string& text) {
  std::vector<TcpEntry> entries;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 10 || !absl::EndsWith(f[0], ":")) continue;  // the header, or damage
    TcpEntry e;
    int remote_port = 0;
    uint32_t state = 0;
    if (!ParseHexAddress(f[1], &e.local, &e.local_port) || !ParseHexAddress(f[2], &e.remote, &remote_port) ||
        !absl::SimpleHexAtoi(f[3], &state) || !absl::SimpleAtoi(f[9], &e.inode)) {
      continue;
    }
    e.state = static_cast<int>(state);
    entries.push_back(std::move(e));
  }
  return entries;
}

std::vector<TcpEntry> ReadTcpTable() {
  std::vector<TcpEntry> all = ParseProcNetTcp(ReadProcFile("/proc/net/tcp"));
  std::vector<TcpEntry> v6 = ParseProcNetTcp(ReadProcFile("/proc/net/tcp6"));
  all.insert(all.end(), v6.begin(), v6.end());
  return all;
}

std::map<uint64_t, int> OwnSocketInodes() {
  std::map<uint64_t, int> inodes;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return inodes;
  while (const dirent* d = ::readdir(dir)) {
    char target[64] = {};
    const std::string path = absl::StrCat("/proc/self/fd/", d->d_name);
    const ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    absl::string_view t(target, static_cast<size_t>(n));  // "socket:[12345]"
    uint64_t inode = 0;
    int fd = -1;
    if (absl::ConsumePrefix(&t, "socket:[") && absl::ConsumeSuffix(&t, "]") && absl::SimpleAtoi(t, &inode) &&
        absl::SimpleAtoi(d->d_name, &fd)) {
      inodes[inode] = fd;
    }
  }
  ::closedir(dir);
  return inodes;
}

std::vector<TcpEntry> AcceptedConnections(const std::vector<TcpEntry>& table, const std::map<uint64_t, int>& own) {
  std::set<int> listen_ports;
  for (const TcpEntry& e : table) {
    if (e.state == kTcpListen && own.count(e.inode) != 0) listen_ports.insert(e.local_port);
  }
  std::vector<TcpEntry> accepted;
  for (const TcpEntry& e : table) {
    if ((e.state == kTcpEstablished || e.state == kTcpCloseWait) && own.count(e.inode) != 0 &&
        listen_ports.count(e.local_port) != 0) {
      accepted.push_back(e);
    }
  }
  return accepted;
}

void AddReceiveRecency(const std::map<uint64_t, int>& own, std::vector<TcpEntry>* entries) {
  for (TcpEntry& e : *entries) {
    const auto it = own.find(e.inode);
    if (it == own.end()) continue;
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (::getsockopt(it->second, IPPROTO_TCP, TCP_INFO, &info, &len) == 0) {
      e.ms_since_receive = info.tcpi_last_data_recv;
    }
  }
}

std::vector<std::string> ClosedSince(const std::vector<TcpEntry>& before, const std::vector<TcpEntry>& now) {
  std::vector<std::string> closed;
  for (const TcpEntry& b : before) {
    int state = kTcpClose;  // gone from the table: closed
    for (const TcpEntry& n : now) {
      if (n.local == b.local && n.remote == b.remote) state = n.state;
    }
    if (state == kTcpFinWait1 || state == kTcpFinWait2 || state == kTcpClosing || state == kTcpTimeWait ||
        state == kTcpLastAck || state == kTcpClose) {
      closed.push_back(b.remote);
    }
  }
  return closed;
}

std::vector<std::string> FailedConnectionCandidates(const std::vector<TcpEntry>& open_then,
                                                    const std::vector<TcpEntry>& now,
                                                    const std::set<std::string>& exclude, int64_t recent_ms) {
  std::vector<std::string> closed, recent;
  for (const std::string& remote : ClosedSince(open_then, now)) {
    if (exclude.count(remote) != 0) continue;
    closed.push_back(remote);
    for (const TcpEntry& e : open_then) {
      if (e.remote == remote && e.ms_since_receive >= 0 && e.ms_since_receive <= recent_ms) {
        recent.push_back(remote);
        break;
      }
    }
  }
  return recent.empty() ? closed : recent;
}

}  // namespace fedprllm
