// Reading a job's state directory back after a restart (docs/round_protocol.md §6): the
// manifest check, job.json, every round's round.json, and the committed uploads their
// records name. Everything is checked before the job trusts it; a file that fails a check
// stops the server with an error naming it.
//
//   ASSIGN_OR_RETURN(RecoveredJob saved, ReadJobState(store, manifest));
//   for (const RoundRecord& r : saved.rounds) ... ReadCommittedUpload(store, r.index, record) ...
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "common/packed_mask.h"
#include "server/state_store.h"

namespace fedprllm {

enum class RoundPhase { kOpen, kAggregating, kClosed };
const char* RoundPhaseName(RoundPhase phase);  // "OPEN", "AGGREGATING", "CLOSED"

// What rounds/<k>/round.json holds (docs/round_protocol.md §6).
struct RoundRecord {
  int index = 0;
  std::vector<int32_t> layers;
  RoundPhase phase = RoundPhase::kOpen;
  int64_t opened_ms = 0;
  int64_t deadline_ms = 0;
  int extensions = 0;
  int64_t closed_ms = 0;
  double aggregation_seconds = 0;
  nlohmann::json commits = nlohmann::json::array();  // commit records, in commit order
};

struct RecoveredJob {
  std::string state;  // job.json "state": WAITING_FOR_CLIENTS, RUNNING, WRITING_MODEL, DONE, FAILED
  std::string failure;
  std::vector<std::string> participants;
  nlohmann::json phases = nlohmann::json::object();
  std::vector<RoundRecord> rounds;  // rounds 0..k with a round.json; all but the last CLOSED
  int removed_temp_files = 0;
  std::vector<std::string> removed_orphan_uploads;  // "round 0: site-b"
};

// round.json's contents.
nlohmann::json RoundRecordJson(const RoundRecord& round);

// Reads the job in `store` and checks it against `manifest`, the manifest this server would
// write (job id, model fingerprint, pruning config, number of rounds): FAILED_PRECONDITION
// naming the field when they differ. Deletes *.tmp files and upload files that no commit
// record names (interrupted writes). DATA_LOSS for a file that is unreadable, not what its
// format says, or inconsistent with the others.
absl::StatusOr<RecoveredJob> ReadJobState(const StateStore& store, const nlohmann::json& manifest);

// The upload file of one commit record of `round`, mapped and checked (CRC32C, and the
// record's masks_sha256 when `check_sha256`), its masks read one at a time.
absl::StatusOr<std::shared_ptr<const MaskSetFile>> OpenCommittedUpload(const StateStore& store, int round,
                                                                        const nlohmann::json& record,
                                                                        bool check_sha256 = true);

}  // namespace fedprllm
