// fedprllm-server's transport bounds: channel arguments, memory quota, admission by
// certificate name at the call's headers, the upload message cap and the listen error.
#include "server/transport_limits.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <grpc/grpc.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/packed_mask.h"
#include "server/peer_identity.h"

namespace fedprllm {

int64_t MaxReceiveMessageBytes(const ServerConfig& config) { return config.max_chunk_bytes + 64 * 1024; }

int64_t TransportMemoryQuotaBytes(const ServerConfig& config) {
  if (config.transport_memory_bytes > 0) return config.transport_memory_bytes;
  return (int64_t{64} << 20) + 4 * config.max_chunk_bytes * static_cast<int64_t>(config.allowed_clients.size());
}

void ApplyTransportLimits(const ServerConfig& config, grpc::ServerBuilder* builder) {
  // gRPC 1.51 checks the message size only after the transport has received the whole
  // message: once a read is pending, chttp2 keeps the stream window open for the length the
  // 5-byte message prefix announces (min_progress_size), so this limit alone does not stop
  // the bytes from being buffered. The quota below bounds what that can hold.
  builder->SetMaxReceiveMessageSize(static_cast<int>(MaxReceiveMessageBytes(config)));
  grpc::ResourceQuota quota("fedprllm-server");
  quota.Resize(static_cast<size_t>(TransportMemoryQuotaBytes(config)));
  builder->SetResourceQuota(quota);  // takes its own reference
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 * 1024);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxConcurrentStreams);
}

grpc::Status AllowlistAdmission::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                                         OutputMetadata* /*consumed_auth_metadata*/,
                                         OutputMetadata* /*response_metadata*/) {
  const std::vector<std::string> names =
      context != nullptr ? PeerCertificateNames(*context) : std::vector<std::string>{};
  std::string method = "a call";
  if (auto it = auth_metadata.find(":path"); it != auth_metadata.end()) {
    method = std::string(it->second.data(), it->second.size());
  }
  const bool site_method = absl::StartsWith(method, "/fedprllm.v1.FedPrLLM/");
  const bool admin_method = absl::StartsWith(method, "/fedprllm.v1.FedPrLLMAdmin/");
  const bool health_method = absl::StartsWith(method, "/grpc.health.v1.Health/");
  const bool is_site = policy_->Site(names).has_value();
  const bool is_admin = policy_->Admin(names).has_value();
  const bool is_monitor = policy_->Monitor(names).has_value();
  bool revoked = false;
  if (context != nullptr && (is_site || is_admin || is_monitor)) {
    for (const grpc::string_ref& pem : context->FindPropertyValues("x509_pem_cert")) {
      revoked = revoked || policy_->Revoked(std::string(pem.data(), pem.size()));
    }
  }
  const bool monitor_may = is_monitor && (health_method || IsReadOnlyAdminMethod(method));
  if (!revoked && ((site_method && is_site) || (admin_method && is_admin) ||
                   (health_method && (is_site || is_admin)) || monitor_may)) {
    return grpc::Status::OK;
  }
  const std::string list = revoked ? "tls.crl" : admin_method ? "admins" : "allowed_clients";
  const std::string who = DescribeNames(names);
  int64_t left_out = -1;  // -1: do not log this one
  {
    absl::MutexLock lock(&mu_);
    if (refusals_.size() > 1000) refusals_.clear();
    Refusals& r = refusals_[absl::StrCat(who, " ", method)];
    const absl::Time now = absl::Now();
    if (now - r.last_logged >= absl::Seconds(30)) {
      left_out = r.unlogged;
      r.last_logged = now;
      r.unlogged = 0;
    } else {
      ++r.unlogged;
    }
  }
  if (left_out >= 0) {
    spdlog::warn("{} refused: {} {} (at its headers, before its request was read){}", method, who,
                 revoked ? "is revoked by tls.crl" : absl::StrCat("not in ", list),
                 left_out > 0 ? absl::StrCat("; ", left_out, " more refusals of it since the last such line") : "");
  }
  if (revoked) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("client certificate (", who, ") is revoked by the federation CA (tls.crl)"));
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat("client certificate identity (", who, ") is not in the server's ", list,
                                   is_admin     ? " (an operator certificate cannot act as a site)"
                                   : is_site    ? " (a site certificate cannot call the admin API)"
                                   : is_monitor ? " (a monitor certificate may only check health and read job status)"
                                                : ""));
}

int64_t MaxUploadMessages(const std::map<std::string, std::vector<int64_t>>& tensors, int64_t max_chunk_bytes) {
  int64_t raw_bytes = 0;
  for (const auto& [name, shape] : tensors) raw_bytes += (NumElements(shape) + 7) / 8;
  const int64_t n = static_cast<int64_t>(tensors.size());
  const int64_t chunk = std::max<int64_t>(max_chunk_bytes, 1);
  // n headers; per payload one partly filled last chunk (at most n payloads); the full
  // chunks of all payloads together cover at most raw_bytes.
  return n + n + (raw_bytes + chunk - 1) / chunk + kUploadMessageSlack;
}

absl::Status ListenError(const std::string& listen_address) {
  const auto unavailable = [&](const std::string& why) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", listen_address, " (config key 'listen_address'): ", why));
  };
  const size_t colon = listen_address.rfind(':');
  if (colon == std::string::npos) return unavailable("not host:port");
  std::string host = listen_address.substr(0, colon);
  const std::string port = listen_address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return unavailable(absl::StrCat("cannot resolve it (", gai_strerror(rc), ")"));
  }
  std::string why = "gRPC could not bind it";
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    const int rc = ::bind(fd, a->ai_addr, a->ai_addrlen);
    const int bind_errno = errno;
    ::close(fd);
    if (rc != 0 && bind_errno == EADDRINUSE) {
      why = "address already in use (another fedprllm-server or another process holds this port)";
      break;
    }
    if (rc != 0) why = absl::StrCat("bind failed: ", std::strerror(bind_errno));
  }
  ::freeaddrinfo(found);
  return unavailable(why);
}

}  // namespace fedprllm
