// HTTP/1.0 GET over a non-blocking socket with poll(), so one deadline bounds connect,
// send and receive.
#include "tests/http_get.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace fedprllm::e2e {
namespace {

using Clock = std::chrono::steady_clock;

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Milliseconds left before `deadline` (at least 0), for poll().
int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits until `fd` is ready for `events`; DEADLINE_EXCEEDED past `deadline`.
absl::Status WaitFor(int fd, short events, Clock::time_point deadline, absl::string_view what) {
  while (true) {
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, MillisLeft(deadline));
    if (n > 0) return absl::OkStatus();
    if (n == 0) return absl::DeadlineExceededError(absl::StrCat("HTTP GET: timed out ", what));
    if (errno != EINTR) return absl::UnavailableError(absl::StrCat("HTTP GET: poll: ", std::strerror(errno)));
  }
}

}  // namespace

absl::StatusOr<HttpResponse> ParseHttpResponse(const std::string& raw) {
  const std::string where = "HTTP response";
  const size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::DataLossError(absl::StrCat(where, ": response has no complete header (", raw.size(), " bytes)"));
  }
  std::vector<absl::string_view> lines = absl::StrSplit(absl::string_view(raw).substr(0, header_end), "\r\n");
  // Status line: "HTTP/1.x 200 OK".
  std::vector<absl::string_view> status = absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  HttpResponse response;
  if (status.size() < 2 || !absl::StartsWith(status[0], "HTTP/1.") ||
      !absl::SimpleAtoi(status[1], &response.status_code)) {
    return absl::DataLossError(absl::StrCat(where, ": not an HTTP status line: \"", absl::CEscape(lines[0]), "\""));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) {
      return absl::DataLossError(absl::StrCat(where, ": bad header line \"", absl::CEscape(lines[i]), "\""));
    }
    response.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  if (auto it = response.headers.find("transfer-encoding"); it != response.headers.end() && it->second != "identity") {
    return absl::DataLossError(absl::StrCat(where, ": transfer encoding \"", it->second, "\" is not supported"));
  }
  response.body = raw.substr(header_end + 4);
  if (auto it = response.headers.find("content-length"); it != response.headers.end()) {
    size_t length = 0;
    if (!absl::SimpleAtoi(it->second, &length)) {
      return absl::DataLossError(absl::StrCat(where, ": bad Content-Length \"", it->second, "\""));
    }
    if (response.body.size() < length) {
      return absl::DataLossError(
          absl::StrCat(where, ": body cut short: ", response.body.size(), " of ", length, " bytes"));
    }
    response.body.resize(length);
  }
  return response;
}

absl::StatusOr<std::string> HttpExchange(const std::string& host, int port, const std::string& request,
                                         double timeout_seconds) {
  const std::string where = absl::StrCat("HTTP to ", host, ":", port);
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_seconds));

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  const int resolved = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (resolved != 0) return absl::UnavailableError(absl::StrCat(where, ": cannot resolve: ", gai_strerror(resolved)));
  Socket socket(::socket(addresses->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const int connected = socket.fd() < 0 ? -1 : connect(socket.fd(), addresses->ai_addr, addresses->ai_addrlen);
  const int connect_errno = errno;
  freeaddrinfo(addresses);
  if (socket.fd() < 0) return absl::UnavailableError(absl::StrCat(where, ": socket: ", std::strerror(connect_errno)));
  if (connected != 0) {
    if (connect_errno != EINPROGRESS) {
      return absl::UnavailableError(absl::StrCat(where, ": connect: ", std::strerror(connect_errno)));
    }
    const absl::Status writable = WaitFor(socket.fd(), POLLOUT, deadline, "connecting");
    if (!writable.ok()) return absl::Status(writable.code(), absl::StrCat(where, ": ", writable.message()));
    int error = 0;
    socklen_t length = sizeof(error);
    getsockopt(socket.fd(), SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0) return absl::UnavailableError(absl::StrCat(where, ": connect: ", std::strerror(error)));
  }

  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(socket.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      const absl::Status writable = WaitFor(socket.fd(), POLLOUT, deadline, "sending");
      if (!writable.ok()) return absl::Status(writable.code(), absl::StrCat(where, ": ", writable.message()));
    } else {
      return absl::UnavailableError(absl::StrCat(where, ": send: ", std::strerror(errno)));
    }
  }

  std::string raw;
  char buffer[16384];
  while (true) {
    const ssize_t n = recv(socket.fd(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      raw.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      break;  // the server closed: the response is complete
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      const absl::Status readable = WaitFor(socket.fd(), POLLIN, deadline, "reading the response");
      if (!readable.ok()) return absl::Status(readable.code(), absl::StrCat(where, ": ", readable.message()));
    } else if (errno == ECONNRESET && !raw.empty()) {
      break;  // the server closed without reading all we sent; what it answered stands
    } else {
      return absl::UnavailableError(absl::StrCat(where, ": recv: ", std::strerror(errno)));
    }
  }
  return raw;
}

absl::StatusOr<HttpResponse> HttpGetResponse(const std::string& host, int port, const std::string& path,
                                             double timeout_seconds) {
  const std::string where = absl::StrCat("GET ", path);
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, ":", port,
                                           "\r\nAccept: */*\r\nConnection: close\r\n\r\n");
  absl::StatusOr<std::string> raw = HttpExchange(host, port, request, timeout_seconds);
  if (!raw.ok()) return absl::Status(raw.status().code(), absl::StrCat(where, ": ", raw.status().message()));
  absl::StatusOr<HttpResponse> response = ParseHttpResponse(*raw);
  if (!response.ok()) {
    return absl::Status(response.status().code(), absl::StrCat(where, ": ", response.status().message()));
  }
  return response;
}

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    double timeout_seconds) {
  absl::StatusOr<HttpResponse> response = HttpGetResponse(host, port, path, timeout_seconds);
  if (!response.ok()) return response.status();
  if (response->status_code != 200) {
    return absl::FailedPreconditionError(absl::StrCat("HTTP GET http://", host, ":", port, path, ": status ",
                                                      response->status_code, ": ",
                                                      absl::CEscape(response->body.substr(0, 200))));
  }
  return std::move(response->body);
}

}  // namespace fedprllm::e2e
