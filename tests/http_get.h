// A tiny blocking HTTP/1.0 client over a raw TCP socket, for tests that read a daemon's
// plain HTTP endpoints (the server's Prometheus /metrics). No TLS, no redirects, no
// keep-alive.
//
//   ASSIGN_OR_RETURN(std::string body, e2e::HttpGet("127.0.0.1", metrics_port, "/metrics"));
//   ASSIGN_OR_RETURN(std::string raw, e2e::HttpExchange("127.0.0.1", port, "POST /metrics HTTP/1.0\r\n\r\n"));
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace fedprllm::e2e {

struct HttpResponse {
  int status_code = 0;                         // e.g. 200, 404
  std::map<std::string, std::string> headers;  // names lower-cased, values trimmed; last one wins
  std::string body;                            // exactly Content-Length bytes when the header is sent
};

// Connects to `host`:`port` (an IP literal or a name getaddrinfo resolves), sends `request`
// as it is, and returns every byte the server sends until it closes the connection.
// Everything, connect included, finishes within `timeout_seconds` or fails
// DEADLINE_EXCEEDED. UNAVAILABLE: cannot resolve or connect, or the connection failed
// (a reset after the response started counts as the end of the response). Blocks the
// calling thread; thread-safe; raises no SIGPIPE.
absl::StatusOr<std::string> HttpExchange(const std::string& host, int port, const std::string& request,
                                         double timeout_seconds = 5.0);

// Splits a raw HTTP/1.x response into status, headers and body. DATA_LOSS: not HTTP, cut
// short of its Content-Length, or a transfer encoding (chunked) this reader does not decode.
absl::StatusOr<HttpResponse> ParseHttpResponse(const std::string& raw);

// HttpExchange of "GET `path` HTTP/1.0" (with Host and Connection: close), parsed; errors
// as HttpExchange's and ParseHttpResponse's, the message naming the URL.
absl::StatusOr<HttpResponse> HttpGetResponse(const std::string& host, int port, const std::string& path,
                                             double timeout_seconds = 5.0);

// HttpGetResponse's body when the status is 200; any other status is FAILED_PRECONDITION
// with the code and the start of the body in the message.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    double timeout_seconds = 5.0);

}  // namespace fedprllm::e2e
