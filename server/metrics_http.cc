// One thread, poll() on the listening socket and a wake-up pipe; each connection is read,
// answered and closed before the next is accepted.
#include "server/metrics_http.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace fedprllm {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Response(absl::string_view status, absl::string_view content_type, const std::string& body,
                     bool send_body, absl::string_view extra_headers = "") {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type, "\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n", extra_headers, "\r\n", send_body ? body : "");
}

std::string PlainResponse(absl::string_view status, bool send_body, absl::string_view extra_headers = "") {
  return Response(status, "text/plain; charset=utf-8", absl::StrCat(status, "\n"), send_body, extra_headers);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& host, int port,
                                                                             std::string path,
                                                                             std::function<std::string()> render) {
  if (port < 0 || port > 65535) return absl::InvalidArgumentError(absl::StrCat("port ", port, " is not in [0, 65535]"));
  const std::string where = absl::StrCat(host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host,
                                         ":", port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  const int resolved =
      getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (resolved != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve \"", host, "\": ", gai_strerror(resolved)));
  }
  const int fd = socket(addresses->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int error = fd < 0 ? errno : 0;
  const char* step = "socket";
  if (fd >= 0) {
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, addresses->ai_addr, addresses->ai_addrlen) != 0) {
      error = errno;
      step = "bind";
    } else if (listen(fd, 16) != 0) {
      error = errno;
      step = "listen";
    }
  }
  freeaddrinfo(addresses);
  if (error != 0) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("cannot ", step, " ", where, ": ", std::strerror(error)));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  const int bound_port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(fd, bound_port, std::move(path), std::move(render)));
}

MetricsHttpServer::MetricsHttpServer(int listen_fd, int port, std::string path, std::function<std::string()> render)
    : listen_fd_(listen_fd), port_(port), path_(std::move(path)), render_(std::move(render)) {
  if (pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    // Without a pipe the thread could not be woken: serve nothing rather than hang the
    // destructor. (pipe2 fails only when the process is out of file descriptors.)
    wake_pipe_[0] = wake_pipe_[1] = -1;
    return;
  }
  thread_ = std::thread([this] { Serve(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  stopping_ = true;
  if (wake_pipe_[1] >= 0) {
    const char byte = 'x';
    (void)!write(wake_pipe_[1], &byte, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (int fd : {wake_pipe_[0], wake_pipe_[1], listen_fd_}) {
    if (fd >= 0) close(fd);
  }
}

bool MetricsHttpServer::WaitFor(int fd, short events, int64_t deadline_ms) {
  while (!stopping_) {
    const int64_t left = deadline_ms < 0 ? -1 : std::max<int64_t>(0, deadline_ms - NowMs());
    pollfd fds[2] = {{fd, events, 0}, {wake_pipe_[0], POLLIN, 0}};
    const int n = poll(fds, 2, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || fds[1].revents != 0) return false;  // timed out, failed, or woken to stop
    return fds[0].revents != 0;
  }
  return false;
}

void MetricsHttpServer::Serve() {
  while (WaitFor(listen_fd_, POLLIN, /*deadline_ms=*/-1)) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      HandleConnection(fd);
      close(fd);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
      // Out of descriptors or memory: back off instead of spinning on a socket that stays
      // readable.
      pollfd wake{wake_pipe_[0], POLLIN, 0};
      poll(&wake, 1, 100);
    }
  }
}

void MetricsHttpServer::HandleConnection(int fd) {
  const int64_t deadline = NowMs() + kConnectionTimeoutMs;
  std::string request;
  char buffer[2048];
  size_t header_end = std::string::npos;
  std::string response;
  while (header_end == std::string::npos) {
    if (!WaitFor(fd, POLLIN, deadline)) return;  // too slow, or stopping: drop it
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) return;  // the client gave up
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return;
    }
    request.append(buffer, static_cast<size_t>(n));
    header_end = request.find("\r\n\r\n");
    const size_t header_bytes = header_end == std::string::npos ? request.size() : header_end + 4;
    if (header_bytes > kMaxRequestBytes) {
      response = PlainResponse("431 Request Header Fields Too Large", true);
      break;
    }
  }
  if (response.empty()) {
    const absl::string_view request_line = absl::string_view(request).substr(0, request.find("\r\n"));
    const std::vector<absl::string_view> parts = absl::StrSplit(request_line, ' ');
    if (parts.size() != 3 || !absl::StartsWith(parts[2], "HTTP/1.")) {
      response = PlainResponse("400 Bad Request", true);
    } else if (parts[0] != "GET" && parts[0] != "HEAD") {
      response = PlainResponse("405 Method Not Allowed", true, "Allow: GET, HEAD\r\n");
    } else {
      const bool send_body = parts[0] == "GET";
      const absl::string_view target = parts[1].substr(0, parts[1].find('?'));
      if (target != path_) {
        response = PlainResponse("404 Not Found", send_body);
      } else {
        response = Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render_(), send_body);
      }
    }
  }
  for (size_t sent = 0; sent < response.size();) {
    const ssize_t n = send(fd, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!WaitFor(fd, POLLOUT, deadline)) return;
    } else {
      return;
    }
  }
  shutdown(fd, SHUT_WR);
}

}  // namespace fedprllm
