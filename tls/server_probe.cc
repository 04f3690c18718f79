// ProbeServer: TCP connect and an OpenSSL handshake shaped like gRPC's, over memory BIOs so
// that every socket write is a send(MSG_NOSIGNAL) and every wait has a deadline.
#include "tls/server_probe.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "tls/openssl_util.h"

namespace fedprllm {

using tls_internal::DescribeCertificate;
using tls_internal::DrainOpenSslErrors;
using tls_internal::PkeyPtr;
using tls_internal::SslCtxPtr;
using tls_internal::SslPtr;
using tls_internal::X509Ptr;

absl::Status SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  std::string a = address;
  for (const char* prefix : {"dns:///", "ipv4:", "ipv6:"}) {
    if (absl::StartsWith(a, prefix)) a = a.substr(std::strlen(prefix));
  }
  if (!a.empty() && a.front() == '[') {
    const size_t close = a.find(']');
    if (close == std::string::npos || close + 1 >= a.size() || a[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("\"", address, "\" is not [ipv6]:port"));
    }
    *host = a.substr(1, close - 1);
    *port = a.substr(close + 2);
  } else {
    const size_t colon = a.rfind(':');
    if (colon == std::string::npos || a.find(':') != colon) {
      return absl::InvalidArgumentError(absl::StrCat("\"", address, "\" is not host:port"));
    }
    *host = a.substr(0, colon);
    *port = a.substr(colon + 1);
  }
  if (host->empty() || port->empty() || port->find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", address, "\" is not host:port"));
  }
  return absl::OkStatus();
}

namespace {

using Clock = std::chrono::steady_clock;

std::string SockaddrText(const sockaddr* sa) {
  char text[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    return absl::StrCat(text, ":", ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    return absl::StrCat("[", text, "]:", ntohs(in6->sin6_port));
  }
  return "?";
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Milliseconds left until `deadline`, at least 0.
int MsLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// A non-blocking TCP connection; closes its socket when destroyed.
class Socket {
 public:
  Socket() = default;
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Connects to one of `host`:`port`'s addresses before `deadline`. UNAVAILABLE with the
  // last error otherwise.
  absl::Status Connect(const std::string& host, const std::string& port, Clock::time_point deadline) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
      return absl::UnavailableError(absl::StrCat("cannot resolve host \"", host, "\": ", gai_strerror(rc)));
    }
    std::string last_error = "no address";
    for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
      const std::string remote = SockaddrText(ai->ai_addr);
      const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) {
        last_error = absl::StrCat("socket: ", std::strerror(errno));
        continue;
      }
      int err = 0;
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
          pollfd p{fd, POLLOUT, 0};
          const int n = ::poll(&p, 1, MsLeft(deadline));
          socklen_t len = sizeof(err);
          if (n <= 0) {
            err = ETIMEDOUT;
          } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
          }
        }
      }
      if (err == 0) {
        fd_ = fd;
        sockaddr_storage local{};
        socklen_t len = sizeof(local);
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
          local_ = SockaddrText(reinterpret_cast<sockaddr*>(&local));
        }
        freeaddrinfo(found);
        return absl::OkStatus();
      }
      ::close(fd);
      last_error = absl::StrCat(remote, ": ", std::strerror(err));
    }
    freeaddrinfo(found);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", host, ":", port, " (", last_error, ")"));
  }

  int fd() const { return fd_; }
  const std::string& local() const { return local_; }

 private:
  int fd_ = -1;
  std::string local_ = "?";
};

// How a TLS operation ended.
enum class Outcome { kDone, kTimeout, kPeerClosed, kSslError };

// An SSL client over memory BIOs, pumped by hand through `socket`.
class TlsConnection {
 public:
  TlsConnection(SSL* ssl, const Socket& socket) : ssl_(ssl), socket_(socket) {
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio_, -1);  // empty means "retry" until the socket reports EOF
    SSL_set_bio(ssl_, rbio_, wbio_);    // ssl_ owns both
  }

  // Runs `op` (SSL_connect, SSL_read, SSL_write) until it returns > 0 or fails for good.
  template <typename Op>
  Outcome Run(Op op, Clock::time_point deadline, int* result) {
    while (true) {
      ERR_clear_error();
      const int r = op();
      const int error = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      errors_ = DrainOpenSslErrors();
      Flush();  // alerts and handshake records go out even when `op` failed
      if (r > 0) {
        *result = r;
        return Outcome::kDone;
      }
      if (error == SSL_ERROR_WANT_WRITE) continue;  // memory BIO: never full
      if (error != SSL_ERROR_WANT_READ) {
        // An alert that arrived before the close is the better explanation.
        return peer_closed_ && !absl::StrContains(errors_, "alert") ? Outcome::kPeerClosed : Outcome::kSslError;
      }
      if (peer_closed_) return Outcome::kPeerClosed;
      pollfd p{socket_.fd(), POLLIN, 0};
      const int n = ::poll(&p, 1, MsLeft(deadline));
      if (n == 0) return Outcome::kTimeout;
      char buf[16384];
      const ssize_t got = ::recv(socket_.fd(), buf, sizeof(buf), 0);
      if (got > 0) {
        BIO_write(rbio_, buf, static_cast<int>(got));
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        peer_closed_ = true;
        close_reason_ =
            got == 0 ? "closed the connection" : absl::StrCat("reset the connection (", std::strerror(errno), ")");
        BIO_set_mem_eof_return(rbio_, 0);  // let OpenSSL see the end and process what is buffered
      }
    }
  }

  const std::string& errors() const { return errors_; }
  const std::string& close_reason() const { return close_reason_; }

 private:
  void Flush() {
    char* data = nullptr;
    const long n = BIO_get_mem_data(wbio_, &data);
    long sent = 0;
    while (sent < n) {
      const ssize_t s = ::send(socket_.fd(), data + sent, static_cast<size_t>(n - sent), MSG_NOSIGNAL);
      if (s > 0) {
        sent += s;
        continue;
      }
      if (s < 0 && (errno == EAGAIN || errno == EINTR)) {
        pollfd p{socket_.fd(), POLLOUT, 0};
        if (::poll(&p, 1, 1000) > 0) continue;
      }
      break;  // the peer is gone; reading will tell
    }
    (void)BIO_reset(wbio_);
  }

  SSL* ssl_;
  const Socket& socket_;
  BIO* rbio_;
  BIO* wbio_;
  bool peer_closed_ = false;
  std::string close_reason_;
  std::string errors_;
};

// Filled by the verify callback: the server's leaf certificate and the first error.
struct VerifyState {
  X509Ptr leaf;
  int error = X509_V_OK;
  int depth = 0;
};

int VerifyStateIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int RecordVerify(int preverify_ok, X509_STORE_CTX* ctx) {
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* state = static_cast<VerifyState*>(SSL_get_ex_data(ssl, VerifyStateIndex()));
  if (state != nullptr) {
    if (state->leaf == nullptr) {
      if (X509* leaf = X509_STORE_CTX_get0_cert(ctx); leaf != nullptr && X509_up_ref(leaf) == 1) {
        state->leaf.reset(leaf);
      }
    }
    if (!preverify_ok && state->error == X509_V_OK) {
      state->error = X509_STORE_CTX_get_error(ctx);
      state->depth = X509_STORE_CTX_get_error_depth(ctx);
    }
  }
  return preverify_ok;
}

// The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113 §3.4).
constexpr char kHttp2Preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
constexpr int kHttp2PrefaceBytes = 24 + 9;

}  // namespace

absl::Status ProbeServer(const std::string& address, const std::string& server_name, const TlsFiles& files,
                         absl::Duration timeout) {
  const Clock::time_point deadline = Clock::now() + absl::ToChronoNanoseconds(timeout);
  std::string host, port;
  if (absl::Status s = SplitHostPort(address, &host, &port); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot probe ", s.message()));
  }
  const std::string name = server_name.empty() ? host : server_name;
  const std::string name_source = server_name.empty() ? "the host in server_address" : "config key 'server_name'";

  // This site's credentials, as gRPC gets them.
  ASSIGN_OR_RETURN(const std::string cert_pem, tls_internal::ReadPemFile(files.cert, "tls.cert"));
  ASSIGN_OR_RETURN(const std::string key_pem, tls_internal::ReadPemFile(files.key, "tls.key"));
  ASSIGN_OR_RETURN(const std::string ca_pem, tls_internal::ReadPemFile(files.ca, "tls.ca"));
  const std::string cert_where = absl::StrCat("config key 'tls.cert' (", files.cert, ")");
  ASSIGN_OR_RETURN(std::vector<X509Ptr> chain, tls_internal::ParseCertificates(cert_pem, cert_where));
  ASSIGN_OR_RETURN(std::vector<X509Ptr> cas,
                   tls_internal::ParseCertificates(ca_pem, absl::StrCat("config key 'tls.ca' (", files.ca, ")")));
  ERR_clear_error();
  tls_internal::BioPtr key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(
      key_bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("config key 'tls.key' (", files.key,
                                                   ") is not a PEM private key (OpenSSL: ", DrainOpenSslErrors(), ")"));
  }
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr) return absl::InternalError(absl::StrCat("SSL_CTX_new: ", DrainOpenSslErrors()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca.get());
  if (SSL_CTX_use_certificate(ctx.get(), chain.front().get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 || SSL_CTX_check_private_key(ctx.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("config keys 'tls.cert'/'tls.key' (", files.cert, ", ", files.key,
                                                   "): unusable pair (OpenSSL: ", DrainOpenSslErrors(), ")"));
  }
  for (size_t i = 1; i < chain.size(); ++i) SSL_CTX_add1_chain_cert(ctx.get(), chain[i].get());
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, RecordVerify);

  Socket socket;
  RETURN_IF_ERROR(socket.Connect(host, port, deadline));
  const std::string from = absl::StrCat(" (this site's end of the connection: ", socket.local(), ")");

  SslPtr ssl(SSL_new(ctx.get()));
  VerifyState verify;
  SSL_set_ex_data(ssl.get(), VerifyStateIndex(), &verify);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_set_alpn_protos(ssl.get(), kAlpn, sizeof(kAlpn));
  if (IsIpLiteral(name)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), name.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl.get(), name.c_str());
    SSL_set1_host(ssl.get(), name.c_str());
  }
  TlsConnection tls(ssl.get(), socket);
  const std::string server = absl::StrCat("the server at ", address);
  int result = 0;
  const Outcome handshake = tls.Run([&] { return SSL_connect(ssl.get()); }, deadline, &result);

  if (verify.error != X509_V_OK) {
    const std::string cert_text = verify.leaf != nullptr ? DescribeCertificate(verify.leaf.get()) : "?";
    if (verify.error == X509_V_ERR_HOSTNAME_MISMATCH || verify.error == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      const std::vector<std::string> names =
          verify.leaf != nullptr ? tls_internal::CertificateNames(verify.leaf.get()) : std::vector<std::string>{};
      return absl::FailedPreconditionError(absl::StrCat("server name mismatch: ", server,
                                                        " presents a certificate for [", absl::StrJoin(names, ", "),
                                                        "], not for \"", name, "\" (", name_source,
                                                        "); set server_name to one of those names or reissue the "
                                                        "server certificate (deploy/make_certs.sh --server-cn)",
                                                        from));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("the certificate of ", server, " is not trusted by config key 'tls.ca' (", files.ca,
                     "): ", X509_verify_cert_error_string(verify.error), " at depth ", verify.depth, "; it has ",
                     cert_text, ". Is tls.ca this federation's CA?", from));
  }
  auto refused = [&](const std::string& how) {
    return absl::FailedPreconditionError(absl::StrCat(
        server, " refused this site's certificate (", cert_where, ": ", DescribeCertificate(chain.front().get()),
        "): ", how, ". Is tls.cert signed by the CA the server trusts, unexpired, and a client certificate?", from));
  };
  if (handshake == Outcome::kTimeout) {
    return absl::UnavailableError(
        absl::StrCat(server, " did not finish the TLS handshake within ", absl::FormatDuration(timeout), from));
  }
  if (handshake == Outcome::kPeerClosed) {
    return absl::UnavailableError(absl::StrCat(server, " ", tls.close_reason(), " during the TLS handshake", from));
  }
  if (handshake == Outcome::kSslError) {
    const std::string& e = tls.errors();
    if (absl::StrContains(e, "no application protocol")) {
      return absl::FailedPreconditionError(
          absl::StrCat(server, " does not speak HTTP/2 over TLS (ALPN h2 refused): is it a fedprllm-server?", from));
    }
    if (absl::StrContains(e, "alert")) return refused(absl::StrCat("it aborted the TLS handshake with \"", e, "\""));
    if (absl::StrContains(e, "wrong version number") || absl::StrContains(e, "packet length too long") ||
        absl::StrContains(e, "record layer failure") || absl::StrContains(e, "http request")) {
      return absl::FailedPreconditionError(absl::StrCat(
          server, " does not speak TLS (", e, "): is it running with insecure: true? Then so must this client", from));
    }
    return absl::UnavailableError(absl::StrCat("TLS handshake with ", server, " failed: ", e.empty() ? "?" : e, from));
  }

  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl.get(), &alpn, &alpn_len);
  if (alpn_len != 2 || std::memcmp(alpn, "h2", 2) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(server, " completed TLS without agreeing to HTTP/2 (ALPN h2): is it a fedprllm-server?", from));
  }
  // TLS 1.3: the server judges this site's certificate now, after the client's Finished.
  Outcome reply = tls.Run([&] { return SSL_write(ssl.get(), kHttp2Preface, kHttp2PrefaceBytes); }, deadline, &result);
  char buf[256];
  if (reply == Outcome::kDone) {
    reply = tls.Run([&] { return SSL_read(ssl.get(), buf, sizeof(buf)); }, deadline, &result);
  }
  switch (reply) {
    case Outcome::kDone:
      return absl::OkStatus();
    case Outcome::kTimeout:
      return absl::UnavailableError(absl::StrCat(server, " sent nothing within ", absl::FormatDuration(timeout),
                                                 " after the TLS handshake", from));
    case Outcome::kPeerClosed:
      return refused(absl::StrCat("it ", tls.close_reason(), " right after the TLS handshake, before any HTTP/2"));
    case Outcome::kSslError:
      if (absl::StrContains(tls.errors(), "alert")) {
        return refused(absl::StrCat("it ended the connection with \"", tls.errors(), "\""));
      }
      return absl::UnavailableError(
          absl::StrCat("TLS with ", server, " failed after the handshake: ", tls.errors(), from));
  }
  return absl::InternalError("unreachable");
}

UnavailableDiagnosis::UnavailableDiagnosis(std::string address, std::string server_name, TlsFiles files,
                                           absl::Duration interval, absl::Duration confirm_after)
    : address_(std::move(address)),
      server_name_(std::move(server_name)),
      files_(std::move(files)),
      interval_(interval),
      confirm_after_(confirm_after) {}

absl::Status UnavailableDiagnosis::Diagnose(std::string* seen) {
  {
    absl::MutexLock lock(&mu_);
    if (!permanent_.ok()) return permanent_;
    if (probing_ || absl::Now() - last_probe_ < interval_) {
      *seen = last_seen_;
      return absl::OkStatus();
    }
    probing_ = true;
  }
  absl::Status s = ProbeServer(address_, server_name_, files_);
  const auto permanent = [](const absl::Status& st) { return !st.ok() && !absl::IsUnavailable(st); };
  if (permanent(s)) {
    absl::SleepFor(confirm_after_);
    s = ProbeServer(address_, server_name_, files_);
  }
  absl::MutexLock lock(&mu_);
  probing_ = false;
  last_probe_ = absl::Now();
  last_seen_ =
      s.ok() ? absl::StrCat("a TLS probe of ", address_, " succeeded (the server accepts this site's certificate)")
             : absl::StrCat("TLS probe: ", s.message());
  *seen = last_seen_;
  if (permanent(s)) permanent_ = s;
  return permanent_;
}

}  // namespace fedprllm
