// What fedprllm-admin prints: the admin API's responses as aligned human-readable text
// (times as "3 s ago" or "14:03:22", states lower-case) and as JSON (the proto's JSON
// mapping with proto field names, every field present). Pure functions of their inputs.
//
//   FormatContext ctx{absl::Now(), absl::LocalTimeZone()};
//   std::cout << FormatJobs(response, ctx);
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "proto/fedprllm.pb.h"

namespace fedprllm {

// When and where the output is read: "now" for ages, the zone for clock times.
struct FormatContext {
  absl::Time now;
  absl::TimeZone zone;
};

// "queued", "running", "done", "failed", "aborted"; "unknown" for anything else.
std::string JobStateName(v1::JobState state);
// QUEUED or RUNNING: the job has not ended.
bool JobIsActive(v1::JobState state);

// A duration of `seconds` >= 0: "3 s", "4 min 5 s", "2 h 10 min", "3 d 4 h"; "-" if negative
// or not finite.
std::string FormatSeconds(double seconds);
// "3 s ago"; "never" for a negative age.
std::string FormatAgo(double seconds);
// A Unix time in milliseconds: "14:03:22" on the day of ctx.now, "2024-05-01 14:03:22" on
// another day (both in ctx.zone); "-" for 0 (not yet).
std::string FormatClockTime(int64_t unix_ms, const FormatContext& ctx);
// "512 B", "1.5 KiB", "3.2 MiB", "1.0 GiB".
std::string FormatBytes(double bytes);

// Rows under a header, columns left-aligned and separated by two spaces, one line each
// (no trailing spaces). Rows shorter than the header get empty cells.
std::string FormatTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// "submitted job NAME (queue position N)\n".
std::string FormatSubmit(const v1::SubmitJobResponse& response);
// Table NAME STATE ROUNDS SITES SUBMITTED STARTED/ENDED REASON, or "no jobs\n".
std::string FormatJobs(const v1::ListJobsResponse& response, const FormatContext& ctx);
// One "key  value" line each: job, id, state, reason, model, strategy, sites, rounds,
// submitted, started, ended, output (empty values left out).
std::string FormatJobSummary(const v1::JobSummary& job, const FormatContext& ctx);
// The live detail (docs/admin_api.md §3): "phase" (the server's finer job state, when it
// adds to the job's), "failure" and "round" lines, and a per-site table SITE STATE LAYER
// LAYERS LAST-SEEN BYTES COMMIT DETAIL. Missing or mistyped fields show as "-"; a
// detail that is not an object, or an empty one, gives "".
std::string FormatJobDetail(const nlohmann::json& detail);
// FormatJobSummary, then FormatJobDetail of detail_json after a blank line (or a note if
// detail_json is not JSON).
std::string FormatJobStatus(const v1::JobStatusResponse& response, const FormatContext& ctx);
// Table IDENTITY CONNECTED LAST-SEEN JOB ACTIVITY, or "no sites\n".
std::string FormatSites(const v1::ListSitesResponse& response);
// The lines, one per line.
std::string FormatLogLines(const v1::JobLogLines& lines);

// `message` in the proto3 JSON mapping (proto field names, default values included).
// INTERNAL if the conversion fails.
absl::StatusOr<nlohmann::json> ProtoToJson(const google::protobuf::Message& message);
// ProtoToJson with detail_json replaced by the object it holds (kept as a string if it is
// not valid JSON).
absl::StatusOr<nlohmann::json> JobStatusToJson(const v1::JobStatusResponse& response);

}  // namespace fedprllm
