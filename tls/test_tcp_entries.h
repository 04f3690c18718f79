// Socket-table rows for the tls tests: a TcpEntry as /proc/net/tcp would give it.
#pragma once

#include <cstdint>
#include <string>

#include "tls/tcp_table.h"

namespace fedprllm::testing {

inline TcpEntry MakeTcpEntry(const std::string& local, const std::string& remote, int state, uint64_t inode) {
  TcpEntry e;
  e.local = local;
  e.remote = remote;
  e.local_port = std::stoi(local.substr(local.rfind(':') + 1));
  e.state = state;
  e.inode = inode;
  return e;
}

}  // namespace fedprllm::testing
