// Human-readable and JSON renderings of the admin API's responses.
#include "admin/admin_format.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/util/json_util.h"

namespace fedprllm {
namespace {

using nlohmann::json;

// detail_json is produced by another program: every accessor tolerates a missing, null or
// mistyped field.
const json* Field(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> Number(const json& object, const char* key) {
  const json* value = Field(object, key);
  if (value == nullptr || !value->is_number()) return std::nullopt;
  return value->get<double>();
}

// An integer field as text, or "-".
std::string IntText(const json& object, const char* key) {
  const std::optional<double> value = Number(object, key);
  if (!value || !std::isfinite(*value)) return "-";
  return absl::StrFormat("%.0f", *value);
}

std::string Text(const json& object, const char* key, const std::string& fallback = "-") {
  const json* value = Field(object, key);
  if (value == nullptr) return fallback;
  if (value->is_string()) return value->get<std::string>();
  return value->dump();
}

std::string Lower(std::string s) {
  absl::AsciiStrToLower(&s);
  return s;
}

std::string SitesCell(const google::protobuf::RepeatedPtrField<std::string>& sites) {
  if (sites.empty()) return "-";
  if (sites.size() <= 3) return absl::StrJoin(sites, ",");
  return absl::StrCat(sites[0], ",", sites[1], " (+", sites.size() - 2, ")");
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// "14:03:22 (5 min ago)", or "-".
std::string TimeAndAge(int64_t unix_ms, const FormatContext& ctx) {
  if (unix_ms == 0) return "-";
  const double age = absl::ToDoubleSeconds(ctx.now - absl::FromUnixMillis(unix_ms));
  return absl::StrCat(FormatClockTime(unix_ms, ctx), " (", age >= 0 ? FormatAgo(age) : "in the future", ")");
}

void AddLine(std::vector<std::vector<std::string>>* lines, const std::string& key, const std::string& value) {
  if (!value.empty()) lines->push_back({key, value});
}

}  // namespace

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return "queued";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_DONE:
      return "done";
    case v1::JOB_STATE_FAILED:
      return "failed";
    case v1::JOB_STATE_ABORTED:
      return "aborted";
    default:
      return "unknown";
  }
}

bool JobIsActive(v1::JobState state) { return state == v1::JOB_STATE_QUEUED || state == v1::JOB_STATE_RUNNING; }

std::string FormatSeconds(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "-";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrCat(s, " s");
  auto two = [](int64_t big, const char* big_unit, int64_t small, const char* small_unit) {
    return small == 0 ? absl::StrCat(big, " ", big_unit)
                      : absl::StrCat(big, " ", big_unit, " ", small, " ", small_unit);
  };
  if (s < 3600) return two(s / 60, "min", s % 60, "s");
  if (s < 86400) return two(s / 3600, "h", (s % 3600) / 60, "min");
  return two(s / 86400, "d", (s % 86400) / 3600, "h");
}

std::string FormatAgo(double seconds) {
  if (seconds < 0) return "never";
  const std::string d = FormatSeconds(seconds);
  return d == "-" ? d : absl::StrCat(d, " ago");
}

std::string FormatClockTime(int64_t unix_ms, const FormatContext& ctx) {
  if (unix_ms == 0) return "-";
  const absl::Time t = absl::FromUnixMillis(unix_ms);
  const bool same_day = absl::ToCivilDay(t, ctx.zone) == absl::ToCivilDay(ctx.now, ctx.zone);
  return absl::FormatTime(same_day ? "%H:%M:%S" : "%Y-%m-%d %H:%M:%S", t, ctx.zone);
}

std::string FormatBytes(double bytes) {
  if (!(bytes >= 0) || !std::isfinite(bytes)) return "-";
  if (bytes < 1024) return absl::StrFormat("%.0f B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  bytes /= 1024;
  while (bytes >= 1024 && unit < 3) {
    bytes /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", bytes, units[unit]);
}

std::string FormatTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < header.size(); ++c) {
      const std::string cell = c < row.size() ? row[c] : "";
      if (c + 1 < header.size()) {
        absl::StrAppend(&line, cell, std::string(width[c] - cell.size() + 2, ' '));
      } else {
        absl::StrAppend(&line, cell);
      }
    }
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  };
  emit(header);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string FormatSubmit(const v1::SubmitJobResponse& response) {
  return absl::StrCat("submitted job ", response.job().name(), " (queue position ", response.queue_position(), ")\n");
}

std::string FormatJobs(const v1::ListJobsResponse& response, const FormatContext& ctx) {
  if (response.jobs().empty()) return "no jobs\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::JobSummary& job : response.jobs()) {
    std::string started_ended = "-";
    if (job.started_unix_ms() != 0 || job.finished_unix_ms() != 0) {
      started_ended = absl::StrCat(FormatClockTime(job.started_unix_ms(), ctx), " / ",
                                   FormatClockTime(job.finished_unix_ms(), ctx));
    }
    rows.push_back({job.name(), JobStateName(job.state()), absl::StrCat(job.rounds_closed(), "/", job.rounds_total()),
                    SitesCell(job.sites()), FormatClockTime(job.submitted_unix_ms(), ctx), started_ended,
                    job.reason()});
  }
  return FormatTable({"NAME", "STATE", "ROUNDS", "SITES", "SUBMITTED", "STARTED/ENDED", "REASON"}, rows);
}

std::string FormatJobSummary(const v1::JobSummary& job, const FormatContext& ctx) {
  std::vector<std::vector<std::string>> lines;
  AddLine(&lines, "job", job.name());
  AddLine(&lines, "id", job.job_id());
  AddLine(&lines, "state", JobStateName(job.state()));
  AddLine(&lines, "reason", job.reason());
  AddLine(&lines, "model", job.model_name());
  AddLine(&lines, "strategy", job.strategy());
  AddLine(&lines, "sites", absl::StrJoin(job.sites(), ", "));
  AddLine(&lines, "rounds", absl::StrCat(job.rounds_closed(), " of ", job.rounds_total(), " closed"));
  if (job.submitted_unix_ms() != 0) AddLine(&lines, "submitted", TimeAndAge(job.submitted_unix_ms(), ctx));
  if (job.started_unix_ms() != 0) AddLine(&lines, "started", TimeAndAge(job.started_unix_ms(), ctx));
  if (job.finished_unix_ms() != 0) AddLine(&lines, "ended", TimeAndAge(job.finished_unix_ms(), ctx));
  AddLine(&lines, "output", job.output_dir());
  std::string out;
  for (const auto& line : lines) absl::StrAppend(&out, absl::StrFormat("%-10s %s\n", line[0], line[1]));
  return out;
}

std::string FormatJobDetail(const json& detail) {
  if (!detail.is_object() || detail.empty()) return "";
  std::string out;
  auto line = [&out](const char* key, const std::string& value) {
    absl::StrAppend(&out, absl::StrFormat("%-10s %s\n", key, value));
  };
  // The server's finer job phase ("WRITING_MODEL"), when it says more than the job state.
  if (const std::string phase = absl::StrReplaceAll(Lower(Text(detail, "state", "")), {{"_", " "}});
      !phase.empty() && phase != "running" && phase != "done" && phase != "failed") {
    line("phase", phase);
  }
  if (const std::string failure = Text(detail, "failure", ""); !failure.empty()) line("failure", failure);
  if (Field(detail, "round") != nullptr) {
    const std::optional<double> index = Number(detail, "round");
    std::string round = index && *index < 0 ? absl::StrCat("none open, ", IntText(detail, "rounds"), " in all")
                                            : absl::StrCat(IntText(detail, "round"), " of ", IntText(detail, "rounds"));
    if (const std::string phase = Lower(Text(detail, "round_state", "")); !phase.empty()) {
      absl::StrAppend(&round, " (", phase, ")");
    }
    absl::StrAppend(&round, ": ", IntText(detail, "committed"), "/", IntText(detail, "expected"), " sites committed");
    if (Number(detail, "min")) absl::StrAppend(&round, " (min ", IntText(detail, "min"), ")");
    if (const auto deadline = Number(detail, "deadline_in_seconds")) {
      absl::StrAppend(&round, ", deadline in ", FormatSeconds(*deadline));
    }
    const auto eta = Number(detail, "eta_seconds");
    absl::StrAppend(&round, ", eta ", eta ? FormatSeconds(*eta) : "unknown");
    line("round", round);
  }
  const json* sites = Field(detail, "sites");
  if (sites != nullptr && sites->is_array() && !sites->empty()) {
    std::vector<std::vector<std::string>> rows;
    for (const json& site : *sites) {
      const auto layer = Number(site, "layer");
      const auto total = Number(site, "layers_total");
      const auto last_seen = Number(site, "last_seen_seconds_ago");
      const auto bytes = Number(site, "bytes");
      const auto commit = Number(site, "commit_seconds");
      rows.push_back({
          Text(site, "site"),
          Lower(Text(site, "state")),
          layer && *layer >= 0 ? IntText(site, "layer") : "-",
          total && *total > 0 ? absl::StrCat(IntText(site, "layers_done"), "/", IntText(site, "layers_total")) : "-",
          last_seen ? FormatAgo(*last_seen) : "-",
          bytes ? FormatBytes(*bytes) : "-",
          commit ? absl::StrFormat("%.1f s", *commit) : "-",
          Text(site, "detail", ""),
      });
    }
    if (!out.empty()) absl::StrAppend(&out, "\n");
    absl::StrAppend(&out,
                    FormatTable({"SITE", "STATE", "LAYER", "LAYERS", "LAST-SEEN", "BYTES", "COMMIT", "DETAIL"}, rows));
  }
  return out;
}

std::string FormatJobStatus(const v1::JobStatusResponse& response, const FormatContext& ctx) {
  std::string out = FormatJobSummary(response.job(), ctx);
  if (response.detail_json().empty()) return out;
  const json detail = json::parse(response.detail_json(), nullptr, /*allow_exceptions=*/false);
  if (detail.is_discarded()) {
    absl::StrAppend(&out, "\n(the server's live detail is not valid JSON)\n");
    return out;
  }
  if (const std::string text = FormatJobDetail(detail); !text.empty()) absl::StrAppend(&out, "\n", text);
  return out;
}

std::string FormatSites(const v1::ListSitesResponse& response) {
  if (response.sites().empty()) return "no sites\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::SiteSummary& site : response.sites()) {
    rows.push_back({site.identity(), site.connected() ? "yes" : "no", FormatAgo(site.last_seen_seconds_ago()),
                    OrDash(site.job()), OrDash(site.activity())});
  }
  return FormatTable({"IDENTITY", "CONNECTED", "LAST-SEEN", "JOB", "ACTIVITY"}, rows);
}

std::string FormatLogLines(const v1::JobLogLines& lines) {
  std::string out;
  for (const std::string& line : lines.lines()) absl::StrAppend(&out, line, "\n");
  return out;
}

absl::StatusOr<json> ProtoToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string text;
  const auto status = google::protobuf::util::MessageToJsonString(message, &text, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat(message.GetTypeName(), " to JSON: ", status.ToString()));
  }
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return absl::InternalError(absl::StrCat(message.GetTypeName(), " to JSON: unparsable"));
  return parsed;
}

absl::StatusOr<json> JobStatusToJson(const v1::JobStatusResponse& response) {
  absl::StatusOr<json> out = ProtoToJson(response);
  if (!out.ok()) return out;
  json detail = json::parse(response.detail_json(), nullptr, /*allow_exceptions=*/false);
  if (!detail.is_discarded()) (*out)["detail_json"] = std::move(detail);
  return out;
}

}  // namespace fedprllm
