// The secure sum's messages on the wire (proto/fedprllm.proto, SecAgg*): conversions between
// secagg/secure_sum.h's structs and their protobuf messages, checking every size on the way in.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "proto/fedprllm.pb.h"
#include "secagg/secure_sum.h"

namespace fedprllm::secagg {

v1::SecAggAdvertisement ToProto(const KeyAdvertisement& advertisement);
// INVALID_ARGUMENT for a public key that is not 32 bytes.
absl::StatusOr<KeyAdvertisement> FromProto(const v1::SecAggAdvertisement& advertisement);

v1::SecAggSealedShares ToProto(const SealedShares& shares);
SealedShares FromProto(const v1::SecAggSealedShares& shares);

v1::SecAggUnmaskResponse ToProto(const UnmaskResponse& response);
// INVALID_ARGUMENT for a share point outside 1..255.
absl::StatusOr<UnmaskResponse> FromProto(const v1::SecAggUnmaskResponse& response);

// The survivors and the dropped of an unmask request, in or out of a SecAggResponse.
void SetUnmaskRequest(const UnmaskRequest& request, v1::SecAggResponse* response);
UnmaskRequest UnmaskRequestOf(const v1::SecAggResponse& response);

}  // namespace fedprllm::secagg
