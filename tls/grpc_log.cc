// GrpcLogRouter: gpr_log lines to spdlog; failed TLS handshakes as one operator line each,
// with the peer found in the socket table and repeats counted instead of logged.
#include "tls/grpc_log.h"

#include <atomic>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fedprllm {
namespace {

constexpr int kGenericLinesPerWindow = 5;
constexpr size_t kMaxPending = 64;                         // beyond this, failures are not attributed
constexpr absl::Duration kClaimMemory = absl::Minutes(2);  // a closed connection is named once
constexpr int64_t kRecentReceiveMs = 250;                  // the failing connection's bytes arrived just now

bool Has(const std::string& text, const char* part) { return absl::StrContains(text, part); }

std::string TrimFile(const char* file) {
  absl::string_view f = file == nullptr ? "?" : file;
  absl::ConsumePrefix(&f, "./");
  absl::ConsumePrefix(&f, "src/");
  return std::string(f);
}

spdlog::level::level_enum LevelOf(gpr_log_severity severity) {
  switch (severity) {
    case GPR_LOG_SEVERITY_DEBUG:
      return spdlog::level::debug;
    case GPR_LOG_SEVERITY_INFO:
      return spdlog::level::info;
    default:
      return spdlog::level::err;
  }
}

// The host part of "1.2.3.4:5" or "[::1]:5", for grouping repeats of one peer.
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || address.find("one of") != std::string::npos) return address;
  return address.substr(0, colon);
}

std::string Seconds(absl::Duration d) { return absl::StrCat(absl::ToInt64Seconds(d), " s"); }

}  // namespace

std::optional<HandshakeFailure> ParseHandshakeFailure(const std::string& message) {
  static const char kFatal[] = "Handshake failed with fatal error ";
  static const char kNoMatch[] = "No match found for server name: ";
  HandshakeFailure failure;
  if (const size_t at = message.find(kNoMatch); at != std::string::npos) {
    absl::string_view name = absl::string_view(message).substr(at + sizeof(kNoMatch) - 1);
    absl::ConsumeSuffix(&name, ".");
    failure.expected_name = std::string(name);
    failure.openssl_reason = "no match for the server name";
    return failure;
  }
  const size_t at = message.find(kFatal);
  if (at == std::string::npos) return std::nullopt;
  absl::string_view rest = absl::string_view(message).substr(at + sizeof(kFatal) - 1);
  absl::ConsumeSuffix(&rest, ".");
  // "SSL_ERROR_SSL: error:0A000086:SSL routines::certificate verify failed"
  if (const size_t colon = rest.find(": "); colon != absl::string_view::npos) rest = rest.substr(colon + 2);
  if (absl::StartsWith(rest, "error:")) {
    const std::vector<absl::string_view> parts = absl::StrSplit(rest, absl::MaxSplits(':', 4));
    if (parts.size() == 5) rest = parts[4];
  }
  failure.openssl_reason = std::string(absl::StripAsciiWhitespace(rest));
  return failure;
}

std::string ExplainHandshakeFailure(const HandshakeFailure& f, TlsRole role) {
  const std::string& r = f.openssl_reason;
  const bool server = role == TlsRole::kServer;
  const char* peer = server ? "the client" : "the server";
  if (!f.expected_name.empty()) {
    return absl::StrCat("a client asked for server name \"", f.expected_name,
                        "\" (TLS SNI), which this server's certificate does not carry; that client will refuse this "
                        "server unless its server_name (or the host in its server_address) is on the certificate");
  }
  if (Has(r, "certificate verify failed")) {
    return server ? "the client's certificate does not verify against this server's tls.ca (signed by another CA, "
                    "expired, or not a client certificate)"
                  : "the server's certificate does not verify against this site's tls.ca (signed by another CA, "
                    "expired, or not a server certificate)";
  }
  if (Has(r, "peer did not return a certificate") || Has(r, "certificate required")) {
    return absl::StrCat(peer, " sent no certificate; mutual TLS requires one");
  }
  if (Has(r, "alert unknown ca")) {
    return absl::StrCat(peer,
                        " does not trust this side's certificate (alert \"unknown ca\": its tls.ca is not the "
                        "CA that signed this side's tls.cert)");
  }
  if (Has(r, "alert bad certificate") || Has(r, "alert certificate unknown") || Has(r, "alert certificate expired")) {
    return absl::StrCat(peer, " refused this side's certificate (", r, "): ", server ? "a server name" : "a name",
                        " it does not carry, or a CA the peer does not trust");
  }
  if (Has(r, "no application protocol")) return absl::StrCat(peer, " did not offer HTTP/2 (ALPN h2): not gRPC");
  if (Has(r, "alert")) return absl::StrCat(peer, " aborted the handshake (", r, ")");
  if (Has(r, "wrong version number") || Has(r, "http request") || Has(r, "packet length too long") ||
      Has(r, "record layer failure")) {
    return absl::StrCat(peer, " does not speak TLS (insecure: true on that side?)");
  }
  if (Has(r, "unsupported protocol") || Has(r, "no shared cipher") || Has(r, "no suitable")) {
    return absl::StrCat("no TLS version or cipher in common with ", peer);
  }
  return absl::StrCat("OpenSSL reports \"", r, "\"");
}

GrpcLogRouter::GrpcLogRouter(GrpcLogOptions options)
    : options_([&] {
        if (!options.emit) {
          options.emit = [](spdlog::level::level_enum level, const std::string& text) {
            spdlog::log(level, "{}", text);
          };
        }
        if (!options.read_table) options.read_table = ReadTcpTable;
        if (!options.own_inodes) options.own_inodes = OwnSocketInodes;
        return std::move(options);
      }()) {
  worker_ = std::thread([this] { Worker(); });
}

GrpcLogRouter::~GrpcLogRouter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    wake_.Signal();
  }
  worker_.join();
}

void GrpcLogRouter::Emit(spdlog::level::level_enum level, const std::string& text) const { options_.emit(level, text); }

void GrpcLogRouter::Handle(gpr_log_severity severity, const char* file, int line, const char* message) {
  const std::string text = message == nullptr ? "" : message;
  std::optional<HandshakeFailure> failure = ParseHandshakeFailure(text);
  // The SNI line (server side, during a handshake that goes on) names no failing connection;
  // on a client, the peer is the configured server.
  if (failure.has_value() && (options_.role == TlsRole::kClient || !failure->expected_name.empty())) {
    std::optional<std::string> out;
    {
      absl::MutexLock lock(&mu_);
      out = AdmitFailure(options_.server_address, *failure);
    }
    if (out.has_value()) Emit(spdlog::level::warn, *out);
    return;
  }
  if (failure.has_value()) {
    Pending p{absl::Now(), *failure, {}, true};
    bool crowded;
    {
      absl::MutexLock lock(&mu_);
      crowded = pending_.size() >= kMaxPending;
    }
    // The failing connection is still open now: gRPC closes it after this line returns.
    if (crowded) {
      p.attributed = false;
    } else {
      const std::map<uint64_t, int> own = options_.own_inodes();
      p.open_then = AcceptedConnections(options_.read_table(), own);
      AddReceiveRecency(own, &p.open_then);
    }
    absl::MutexLock lock(&mu_);
    pending_.push_back(std::move(p));
    wake_.Signal();
    return;
  }
  const std::string where = absl::StrCat(TrimFile(file), ":", line);
  const spdlog::level::level_enum level = LevelOf(severity);
  if (absl::StartsWith(text, "assertion failed")) {  // GPR_ASSERT: gRPC aborts right after
    Emit(spdlog::level::critical, absl::StrCat("grpc: ", text, " [", where, "]"));
    return;
  }
  std::optional<std::string> out;
  {
    absl::MutexLock lock(&mu_);
    out = Admit(absl::StrCat("grpc ", where), absl::StrCat("grpc: ", text, " [", where, "]"),
                absl::StrCat("grpc: lines from ", where), level, kGenericLinesPerWindow);
  }
  if (out.has_value()) Emit(level, *out);
}

std::optional<std::string> GrpcLogRouter::Admit(const std::string& key, const std::string& text,
                                                const std::string& summary, spdlog::level::level_enum level,
                                                int allowed_per_window) {
  const absl::Time now = absl::Now();
  Repeats& r = repeats_[key];
  if (now - r.window_start >= options_.repeat_window) {
    std::string line = text;
    if (r.suppressed > 0) {
      absl::StrAppend(&line, " (", r.suppressed, " more like this in the ", Seconds(now - r.window_start),
                      " before were not logged)");
    }
    r.window_start = now;
    r.admitted = 1;
    r.suppressed = 0;
    return line;
  }
  if (r.admitted < allowed_per_window) {
    ++r.admitted;
    return text;
  }
  ++r.suppressed;
  r.summary = summary;
  r.level = level;
  return std::nullopt;
}

std::vector<std::pair<spdlog::level::level_enum, std::string>> GrpcLogRouter::FlushRepeats(absl::Time now) {
  std::vector<std::pair<spdlog::level::level_enum, std::string>> lines;
  for (auto& [key, r] : repeats_) {
    if (r.suppressed > 0 && now - r.window_start >= options_.repeat_window) {
      lines.emplace_back(r.level, absl::StrCat(r.summary, ": ", r.suppressed, " more in the last ",
                                               Seconds(now - r.window_start), " were not logged"));
      r.suppressed = 0;
      r.window_start = absl::InfinitePast();  // the next one is logged in full
    }
  }
  return lines;
}

std::optional<std::string> GrpcLogRouter::AdmitFailure(const std::string& peer, const HandshakeFailure& failure) {
  const std::string side = options_.role == TlsRole::kServer ? "client" : "server";
  const std::string why = ExplainHandshakeFailure(failure, options_.role);
  if (!failure.expected_name.empty()) {
    return Admit(absl::StrCat("tls sni ", failure.expected_name), absl::StrCat("TLS: ", why),
                 absl::StrCat("TLS: more clients asked for server name \"", failure.expected_name, "\""),
                 spdlog::level::warn, 1);
  }
  const std::string raw = absl::StrCat("OpenSSL: ", failure.openssl_reason);
  return Admit(absl::StrCat("tls ", HostOf(peer), " ", why),
               absl::StrCat("TLS handshake with ", side, " ", peer, " failed: ", why, " [", raw, "]"),
               absl::StrCat("TLS handshake with ", side, " ", HostOf(peer), " failed: ", why), spdlog::level::warn, 1);
}

std::string GrpcLogRouter::ResolvePeer(const Pending& p, const std::vector<TcpEntry>& now_table) {
  if (!p.attributed) return "(peer not looked up: too many failures at once)";
  for (auto it = claimed_.begin(); it != claimed_.end();) {
    it = p.when - it->second > kClaimMemory ? claimed_.erase(it) : std::next(it);
  }
  std::set<std::string> named_before;
  for (const auto& [remote, when] : claimed_) named_before.insert(remote);
  const std::vector<std::string> named =
      FailedConnectionCandidates(p.open_then, now_table, named_before, kRecentReceiveMs);
  for (const std::string& remote : named) claimed_[remote] = p.when;
  if (named.size() == 1) return named.front();
  if (named.empty()) return "(peer unknown: no accepted connection closed after the failure)";
  return absl::StrCat("one of ", absl::StrJoin(named, ", "));
}

void GrpcLogRouter::Worker() {
  while (true) {
    std::optional<Pending> job;
    std::vector<std::pair<spdlog::level::level_enum, std::string>> lines;
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        const absl::Time now = absl::Now();
        if (!pending_.empty() && (stop_ || now >= pending_.front().when + options_.attribution_delay)) break;
        if (stop_) return;
        lines = FlushRepeats(now);
        if (!lines.empty()) break;
        absl::Time deadline = now + options_.repeat_window / 2;
        if (!pending_.empty()) deadline = std::min(deadline, pending_.front().when + options_.attribution_delay);
        wake_.WaitWithDeadline(&mu_, deadline);
      }
      if (lines.empty()) {
        job = std::move(pending_.front());
        pending_.pop_front();
        ++in_flight_;
      }
    }
    for (const auto& [level, text] : lines) Emit(level, text);
    if (!job.has_value()) continue;
    const std::vector<TcpEntry> now_table = job->attributed ? options_.read_table() : std::vector<TcpEntry>{};
    std::optional<std::string> out;
    {
      absl::MutexLock lock(&mu_);
      out = AdmitFailure(ResolvePeer(*job, now_table), job->failure);
    }
    if (out.has_value()) Emit(spdlog::level::warn, *out);
    absl::MutexLock lock(&mu_);
    --in_flight_;
  }
}

void GrpcLogRouter::Drain() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](GrpcLogRouter* r) ABSL_NO_THREAD_SAFETY_ANALYSIS { return r->pending_.empty() && r->in_flight_ == 0; },
      this));
}

namespace {

std::atomic<GrpcLogRouter*> g_router{nullptr};

void RouteToRouter(gpr_log_func_args* args) {
  if (GrpcLogRouter* router = g_router.load(std::memory_order_acquire)) {
    router->Handle(args->severity, args->file, args->line, args->message);
  }
}

}  // namespace

void InstallGrpcLogRouting(GrpcLogOptions options) {
  static absl::Mutex install_mu(absl::kConstInit);
  absl::MutexLock lock(&install_mu);
  if (g_router.load() != nullptr) return;
  g_router.store(new GrpcLogRouter(std::move(options)), std::memory_order_release);  // lives until exit
  gpr_set_log_function(RouteToRouter);
}

}  // namespace fedprllm
