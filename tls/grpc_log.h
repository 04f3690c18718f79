// gRPC core's log lines (gpr_log) through spdlog, at matching levels, and one operator line
// per failed TLS handshake, with the peer and the reason in words, rate-limited. gRPC
// drops lines below its own verbosity (GRPC_VERBOSITY, default ERROR) before the router
// sees them; what reaches it keeps its level (DEBUG, INFO, ERROR -> debug, info, err).
//
// What gRPC 1.51 itself logs about handshakes (OpenSSL build, default verbosity ERROR):
//   ERROR ssl_transport_security.cc:1501, on the side whose handshake failed:
//         "Handshake failed with fatal error SSL_ERROR_SSL: error:0A000086:SSL
//         routines::certificate verify failed." (server: the client's certificate failed;
//         "sslv3 alert bad certificate" / "tlsv1 alert unknown ca": the client refused ours;
//         "peer did not return a certificate"; "wrong version number": plaintext peer)
//   ERROR ssl_transport_security.cc:1934, server side, SNI callback: "No match found for
//         server name: X." The handshake goes on with the default certificate; a gRPC
//         client then rejects the name after the handshake and just closes the connection,
//         so the server logs no failure for it.
//   DEBUG security_handshaker.cc:205 / chttp2_server.cc:448: "Security handshake failed:
//         ..." / "Handshaking failed: ..." (same reason; only with GRPC_VERBOSITY=DEBUG)
// A client whose certificate the server refuses logs nothing at ERROR: it sees "Socket
// closed" (TLS 1.3: the server checks it after the client's Finished and closes without
// an alert). None of these lines names the peer.
//
// On the server the router therefore takes a snapshot of the process's accepted TCP
// connections when a failure line arrives (the failing one is still open then, and has
// just received the bytes that failed) and, `attribution_delay` later, names the
// connection the server has closed in between, preferring one that received data within
// 250 ms of the line (tls/tcp_table.h). If several remain the line says "one of A, B"; if
// none, "peer unknown". The client knows its peer: the configured server address.
//
//   InstallGrpcLogRouting({TlsRole::kServer});  // first thing in RunServer
#pragma once

#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tls/key_pair_check.h"
#include "tls/tcp_table.h"

namespace fedprllm {

struct GrpcLogOptions {
  // kServer: handshake failures concern clients, found in the socket table.
  // kClient: they concern the server at `server_address`.
  TlsRole role = TlsRole::kServer;
  std::string server_address;
  // A handshake failure with the same peer host and reason, or a gRPC line from the same
  // file:line after its first 5, is logged at most once per window; the next line says
  // how many were left out. Default 30 s.
  absl::Duration repeat_window = absl::Seconds(30);
  // How long after the failure the server looks for the connection it closed. Default
  // 300 ms (gRPC closes it within a few ms).
  absl::Duration attribution_delay = absl::Milliseconds(300);
  // Where lines go. Default: spdlog's default logger.
  std::function<void(spdlog::level::level_enum, const std::string&)> emit;
  // Socket table seams for tests. Default: ReadTcpTable, OwnSocketInodes.
  std::function<std::vector<TcpEntry>()> read_table;
  std::function<std::map<uint64_t, int>()> own_inodes;
};

// A failed handshake as gRPC's line describes it.
struct HandshakeFailure {
  std::string openssl_reason;  // "certificate verify failed"
  std::string expected_name;   // the SNI line's "No match found for server name: X."; else ""
};

// The failure a gRPC log message reports, or nullopt if it reports none.
std::optional<HandshakeFailure> ParseHandshakeFailure(const std::string& message);

// The failure in an operator's words, from the side of `role` (whose peer is the other
// side), e.g. "the client's certificate does not verify against this server's tls.ca ...".
std::string ExplainHandshakeFailure(const HandshakeFailure& failure, TlsRole role);

// Routes one process's gRPC log lines. Thread-safe; Handle never blocks on I/O beyond
// reading the socket table once per handshake failure. Owns one worker thread.
class GrpcLogRouter {
 public:
  explicit GrpcLogRouter(GrpcLogOptions options);
  ~GrpcLogRouter();
  GrpcLogRouter(const GrpcLogRouter&) = delete;
  GrpcLogRouter& operator=(const GrpcLogRouter&) = delete;

  // One gpr_log line.
  void Handle(gpr_log_severity severity, const char* file, int line, const char* message);
  // Blocks until every handshake failure handled so far has been logged or counted (tests).
  void Drain();

 private:
  struct Pending {
    absl::Time when;
    HandshakeFailure failure;
    std::vector<TcpEntry> open_then;  // accepted connections at `when` (server only)
    bool attributed = true;           // false when the table was not read (flood)
  };
  struct Repeats {
    absl::Time window_start = absl::InfinitePast();
    int admitted = 0;  // lines logged in this window
    int64_t suppressed = 0;
    std::string summary;  // what a summary line says about the suppressed ones
    spdlog::level::level_enum level = spdlog::level::warn;
  };

  void Worker();
  // Logs `text` unless `key` logged within the window; returns the line to emit, if any.
  std::optional<std::string> Admit(const std::string& key, const std::string& text, const std::string& summary,
                                   spdlog::level::level_enum level, int allowed_per_window)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Summary lines for windows that ended with suppressed lines.
  std::vector<std::pair<spdlog::level::level_enum, std::string>> FlushRepeats(absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(spdlog::level::level_enum level, const std::string& text) const;
  // The remote address of the connection `p` was about, judged from `now_table`.
  std::string ResolvePeer(const Pending& p, const std::vector<TcpEntry>& now_table) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The operator line for `failure` with `peer`, through the repeat filter.
  std::optional<std::string> AdmitFailure(const std::string& peer, const HandshakeFailure& failure)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GrpcLogOptions options_;
  absl::Mutex mu_;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // taken off pending_, not yet logged
  std::map<std::string, Repeats> repeats_ ABSL_GUARDED_BY(mu_);
  // Remote addresses already named for an earlier failure, and when.
  std::map<std::string, absl::Time> claimed_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar wake_;
  std::thread worker_;
};

// Makes a process-wide GrpcLogRouter with `options` the target of gpr_set_log_function.
// The first call wins; later calls change nothing. The router lives until the process ends.
void InstallGrpcLogRouting(GrpcLogOptions options);

}  // namespace fedprllm
