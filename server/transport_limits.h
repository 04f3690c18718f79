// Bounds that fedprllm-server enforces below the service, in gRPC's transport, so that a peer
// can make the server buffer only a small, bounded amount before anything checks it
// (docs/round_protocol.md §9): the channel arguments and memory quota of the listening
// port, the admission check that refuses a non-allowlisted certificate at the call's
// headers (before its request is read), the upload message cap, and the listen error.
//
//   grpc::ServerBuilder builder;
//   ApplyTransportLimits(config, &builder);
//   credentials->SetAuthMetadataProcessor(std::make_shared<AllowlistAdmission>(allowlist));
//   ...
//   if (server == nullptr) return ListenError(config.listen_address);
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_builder.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/access_policy.h"
#include "server/server_config.h"

namespace fedprllm {

// Largest gRPC message the server accepts, bytes: one upload chunk (max_chunk_bytes of
// data) plus 64 KiB for its protobuf framing, the session token and a header's index lists.
// Every other request (Join, WaitForRound, FetchDecisions) is a few hundred bytes.
int64_t MaxReceiveMessageBytes(const ServerConfig& config);

// Memory that gRPC's transport may hold for all connections together (read buffers,
// received but unread messages), bytes: transport_memory_bytes, or when that is 0,
// 64 MiB + 4 * max_chunk_bytes per allowed client. Past it gRPC first closes idle
// connections, then cancels streams (RESOURCE_EXHAUSTED, "Buffers full") until it is back
// under the quota.
int64_t TransportMemoryQuotaBytes(const ServerConfig& config);

// Sets on `builder`: the receive message limit, the memory quota, no SO_REUSEPORT (a
// second server on a port in use fails at startup instead of sharing it), no BDP probing
// and a fixed 64 KiB stream window (the window does not grow with bandwidth estimates),
// and at most kMaxConcurrentStreams streams per connection.
void ApplyTransportLimits(const ServerConfig& config, grpc::ServerBuilder* builder);
inline constexpr int kMaxConcurrentStreams = 16;

// Refuses, with PERMISSION_DENIED, every call whose TLS peer certificate carries none of
// the names of its method's role, when gRPC has read the call's headers and before it
// reads (and buffers) the request message: the site service (/fedprllm.v1.FedPrLLM/) takes
// `sites`, the admin service (/fedprllm.v1.FedPrLLMAdmin/) takes `admins`, the health
// service takes either, and any other method is refused. The services still check
// identity themselves; this makes a holder of a federation certificate without that role
// unable to make the server buffer a message. Logs a refused identity at most once per
// method and 30 s, then how many refusals were left out. Thread-safe; never blocks.
class AllowlistAdmission final : public grpc::AuthMetadataProcessor {
 public:
  // A certificate that `policy` says is revoked is refused on every method.
  explicit AllowlistAdmission(std::shared_ptr<const AccessPolicy> policy) : policy_(std::move(policy)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata, OutputMetadata* response_metadata) override;

 private:
  const std::shared_ptr<const AccessPolicy> policy_;
  struct Refusals {
    absl::Time last_logged;
    int64_t unlogged = 0;
  };
  absl::Mutex mu_;
  std::map<std::string, Refusals> refusals_ ABSL_GUARDED_BY(mu_);  // by identity and method; at most 1000
};

// Most messages one upload stream for a round can need: every tensor in its own payload
// (one header each), each payload's chunks filled to `max_chunk_bytes` except its last
// (docs/mask_wire_format.md §4), plus kUploadMessageSlack. `tensors`: name -> shape of the
// round's masks (ceil(numel / 8) raw bytes each). A stream with more messages is refused,
// a drained duplicate stream included.
int64_t MaxUploadMessages(const std::map<std::string, std::vector<int64_t>>& tensors, int64_t max_chunk_bytes);
inline constexpr int64_t kUploadMessageSlack = 16;

// The error for a listening port gRPC could not open: probes `listen_address` with a plain
// bind (SO_REUSEADDR, like gRPC) and says "address already in use" when something holds
// it, otherwise why the address cannot be bound. Names config key 'listen_address'.
absl::Status ListenError(const std::string& listen_address);

}  // namespace fedprllm
