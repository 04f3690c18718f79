// The HTTP side of the server's /metrics endpoint: a minimal HTTP/1.1 server on one thread
// that answers GET (and HEAD) of one path with text a callback renders, 404 for any other
// path and 405 for any other method, one request per connection.
//
// Why not prometheus-cpp's Exposer: it runs civetweb, whose Debian build starts every thread
// with a fixed 100 KiB stack, and pthread_create refuses such a stack (EINVAL) in a process
// whose static TLS is larger, which fedprllm-server's is (OpenBLAS, glog and LibTorch hold
// about 106 KiB). civetweb then fails with "Cannot create threads".
//
//   ASSIGN_OR_RETURN(auto http, MetricsHttpServer::Start("127.0.0.1", 9464, "/metrics",
//                                                        [&] { return metrics.Scrape(); }));
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace fedprllm {

class MetricsHttpServer {
 public:
  // Serves http://`host`:`port``path`. `host` is an IP literal (IPv4, or IPv6 without
  // brackets), "localhost", or a name that resolves (the first address is used); `port` 0
  // picks a free port (see port()). `render` is called on the server's thread, once per
  // GET, and must be thread-safe with respect to the caller's other threads. The socket has
  // SO_REUSEADDR (a restart is not blocked by old connections) but no SO_REUSEPORT (a port
  // another socket listens on is refused).
  // Errors: INVALID_ARGUMENT for a port outside [0, 65535] or a host that does not resolve;
  // UNAVAILABLE when the socket cannot be bound or listened on, with the reason in words
  // ("Address already in use", "Cannot assign requested address").
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                                  std::string path,
                                                                  std::function<std::string()> render);

  // Stops serving and joins the thread; a request in progress is cut off. Returns promptly
  // (the thread waits on a wake-up pipe, never on a sleep).
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

  // Per connection: the whole request must arrive, and the response must be taken, within
  // this many milliseconds; requests are served one at a time, so a stalled client holds
  // others back at most this long. The request (line and headers) is at most
  // kMaxRequestBytes; a longer one gets 431.
  static constexpr int kConnectionTimeoutMs = 5000;
  static constexpr size_t kMaxRequestBytes = 8192;

 private:
  MetricsHttpServer(int listen_fd, int port, std::string path, std::function<std::string()> render);
  void Serve();
  void HandleConnection(int fd);
  // True when `fd` is ready for `events` before the deadline and no stop was asked for.
  bool WaitFor(int fd, short events, int64_t deadline_ms);

  const int listen_fd_;
  const int port_;
  const std::string path_;
  const std::function<std::string()> render_;
  int wake_pipe_[2] = {-1, -1};  // written once by the destructor to wake the thread
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: started after everything it reads is set
};

}  // namespace fedprllm
