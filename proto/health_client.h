// A one-shot client of the standard gRPC health service (grpc.health.v1.Health/Check), for
// tests and operator tooling. fedprllm-server answers it on its mTLS port for the service
// names "" (the whole server) and "fedprllm.v1.FedPrLLM" (docs/metrics.md).
//
//   auto channel = grpc::CreateChannel("127.0.0.1:50051", credentials);
//   ASSIGN_OR_RETURN(std::string status, CheckHealth(channel, "fedprllm.v1.FedPrLLM", 5.0));
//   if (status != "SERVING") ...
#pragma once

#include <grpcpp/channel.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace fedprllm {

// Asks the server behind `channel` for the serving status of `service` ("" = the whole
// server), waiting for the channel to connect, and for the answer, at most
// `timeout_seconds` (> 0) in all. Blocks the calling thread; thread-safe; `channel` is
// shared, not consumed.
//
// Returns the status's name as the proto spells it: "SERVING", "NOT_SERVING", "UNKNOWN" or
// "SERVICE_UNKNOWN" (the last two are legal answers, though gRPC's own service sends
// neither from Check), or "UNKNOWN(<number>)" for a value this proto does not define. Errors:
//  * INVALID_ARGUMENT: timeout_seconds is not positive (or not finite);
//  * NOT_FOUND: the server does not know `service` (that is how Check reports it);
//  * UNIMPLEMENTED: the server serves no health service;
//  * DEADLINE_EXCEEDED, UNAVAILABLE, ...: the RPC's own failure.
// Every error message names the service asked about.
absl::StatusOr<std::string> CheckHealth(std::shared_ptr<grpc::Channel> channel, const std::string& service,
                                        double timeout_seconds);

}  // namespace fedprllm
