// Resume after a restart: reads and checks the state directory (ReadJobState), then rebuilds
// the job from it (FederationJob::Resume): every committed upload is replayed into the vote
// counters, every closed round is decided again and checked against its saved decision, so
// the global model and the decisions come out exactly as in a run that was never stopped.
#include "server/job_recovery.h"

#include <spdlog/spdlog.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/federation_job.h"

namespace fedprllm {
namespace {

absl::Status Corrupt(const StateStore& store, const std::string& relative, absl::string_view why) {
  return absl::DataLossError(absl::StrCat(store.dir(), "/", relative, ": ", why, " (corrupt job state)"));
}

template <typename T>
absl::StatusOr<T> Field(const StateStore& store, const std::string& relative, const nlohmann::json& json,
                        const char* key) {
  if (!json.contains(key)) return Corrupt(store, relative, absl::StrCat("no field '", key, "'"));
  try {
    return json.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(store, relative, absl::StrCat("field '", key, "': ", e.what()));
  }
}

absl::StatusOr<RoundPhase> ParsePhase(const StateStore& store, const std::string& relative, const std::string& text) {
  for (RoundPhase p : {RoundPhase::kOpen, RoundPhase::kAggregating, RoundPhase::kClosed}) {
    if (text == RoundPhaseName(p)) return p;
  }
  return Corrupt(store, relative, absl::StrCat("unknown round state \"", text, "\""));
}

absl::StatusOr<RoundRecord> ReadRound(const StateStore& store, int index) {
  const std::string file = StateStore::RoundFile(index);
  ASSIGN_OR_RETURN(nlohmann::json json, store.ReadJson(file));
  RoundRecord round;
  ASSIGN_OR_RETURN(round.index, Field<int>(store, file, json, "round"));
  if (round.index != index) return Corrupt(store, file, absl::StrCat("names round ", round.index));
  ASSIGN_OR_RETURN(round.layers, (Field<std::vector<int32_t>>(store, file, json, "layers")));
  ASSIGN_OR_RETURN(std::string phase, Field<std::string>(store, file, json, "state"));
  ASSIGN_OR_RETURN(round.phase, ParsePhase(store, file, phase));
  ASSIGN_OR_RETURN(round.opened_ms, Field<int64_t>(store, file, json, "opened_unix_ms"));
  ASSIGN_OR_RETURN(round.deadline_ms, Field<int64_t>(store, file, json, "deadline_unix_ms"));
  ASSIGN_OR_RETURN(round.extensions, Field<int>(store, file, json, "extensions"));
  round.closed_ms = json.value("closed_unix_ms", int64_t{0});
  round.aggregation_seconds = json.value("aggregation_seconds", 0.0);
  if (!json.contains("commits") || !json["commits"].is_array()) return Corrupt(store, file, "no commit list");
  round.commits = json["commits"];
  std::set<std::string> clients;
  for (const nlohmann::json& record : round.commits) {
    ASSIGN_OR_RETURN(std::string client, Field<std::string>(store, file, record, "client"));
    // Masks, or an exact-strategy site's statistics record.
    const char* digest = record.contains("statistics_sha256") ? "statistics_sha256" : "masks_sha256";
    RETURN_IF_ERROR(Field<std::string>(store, file, record, digest).status());
    if (!clients.insert(client).second) return Corrupt(store, file, absl::StrCat(client, " is committed twice"));
  }
  return round;
}

}  // namespace

nlohmann::json RoundRecordJson(const RoundRecord& r) {
  return {{"round", r.index},
          {"layers", r.layers},
          {"state", RoundPhaseName(r.phase)},
          {"opened_unix_ms", r.opened_ms},
          {"deadline_unix_ms", r.deadline_ms},
          {"extensions", r.extensions},
          {"closed_unix_ms", r.closed_ms},
          {"aggregation_seconds", r.aggregation_seconds},
          {"commits", r.commits}};
}

const char* RoundPhaseName(RoundPhase phase) {
  switch (phase) {
    case RoundPhase::kOpen:
      return "OPEN";
    case RoundPhase::kAggregating:
      return "AGGREGATING";
    case RoundPhase::kClosed:
      return "CLOSED";
  }
  return "?";
}

absl::StatusOr<RecoveredJob> ReadJobState(const StateStore& store, const nlohmann::json& manifest) {
  ASSIGN_OR_RETURN(nlohmann::json saved, store.ReadJson("manifest.json"));
  for (const char* key : {"job_id", "protocol_version", "model_fingerprint", "config", "num_rounds"}) {
    if (saved.value(key, nlohmann::json()) != manifest.at(key)) {
      return absl::FailedPreconditionError(absl::StrCat(
          store.dir(), "/manifest.json: saved ", key, " ", saved.value(key, nlohmann::json()).dump(),
          " differs from this server's ", manifest.at(key).dump(), "; the state belongs to another job"));
    }
  }
  RecoveredJob job;
  job.removed_temp_files = store.RemoveTempFiles();
  ASSIGN_OR_RETURN(nlohmann::json state, store.ReadJson("job.json"));
  ASSIGN_OR_RETURN(job.state, Field<std::string>(store, "job.json", state, "state"));
  job.failure = state.value("failure", "");
  job.participants = state.value("participants", std::vector<std::string>{});
  job.phases = state.value("phases", nlohmann::json::object());
  const int num_rounds = manifest.at("num_rounds").get<int>();
  for (int k = 0; k < num_rounds && store.Exists(StateStore::RoundFile(k)); ++k) {
    if (!job.rounds.empty() && job.rounds.back().phase != RoundPhase::kClosed) {
      return Corrupt(store, StateStore::RoundFile(k),
                     absl::StrCat("exists while round ", k - 1, " is ", RoundPhaseName(job.rounds.back().phase)));
    }
    ASSIGN_OR_RETURN(RoundRecord round, ReadRound(store, k));
    std::set<std::string> committed;
    for (const nlohmann::json& record : round.commits) committed.insert(record["client"].get<std::string>());
    for (const std::string& orphan : store.RemoveOrphanUploads(k, committed)) {
      job.removed_orphan_uploads.push_back(absl::StrCat("round ", k, ": ", orphan));
    }
    if (round.phase == RoundPhase::kClosed && !store.Exists(StateStore::DecisionMaskFile(k))) {
      return Corrupt(store, StateStore::RoundFile(k), "is CLOSED but its decision.masks is missing");
    }
    job.rounds.push_back(std::move(round));
  }
  const bool last_closed_final = static_cast<int>(job.rounds.size()) == num_rounds &&
                                 job.rounds.back().phase == RoundPhase::kClosed;
  if ((job.state == "WRITING_MODEL" || job.state == "DONE") && !last_closed_final) {
    return Corrupt(store, "job.json", absl::StrCat("says ", job.state, " but not every round is CLOSED"));
  }
  return job;
}

absl::StatusOr<std::shared_ptr<const MaskSetFile>> OpenCommittedUpload(const StateStore& store, int round,
                                                                        const nlohmann::json& record,
                                                                        bool check_sha256) {
  const std::string client = record["client"].get<std::string>();
  const std::string file = StateStore::UploadFile(round, client);
  absl::StatusOr<std::shared_ptr<const MaskSetFile>> opened = MaskSetFile::Open(
      absl::StrCat(store.dir(), "/", file), check_sha256 ? record["masks_sha256"].get<std::string>() : "");
  if (!opened.ok() && opened.status().code() != absl::StatusCode::kDataLoss) {
    return Corrupt(store, file, absl::StrCat("committed upload unreadable: ", opened.status().message()));
  }
  return opened;
}

// ---- FederationJob's side ------------------------------------------------------------------

absl::Status FederationJob::CountUpload(const std::string& client, std::shared_ptr<const MaskSetFile> upload) {
  const auto tensors = upload->tensors();
  return pruner_.AddClientSource(client, tensors, [upload = std::move(upload)](const std::string& name) {
    return upload->Mask(name);
  });
}

absl::Status FederationJob::ReplayStatistics(int round, const std::string& client, const nlohmann::json& record) {
  const std::string file = StateStore::StatisticsFile(round, client);
  if (!record.contains("statistics_sha256")) return Corrupt(store_, StateStore::RoundFile(round), "a commit of masks in an exact job");
  ASSIGN_OR_RETURN(const std::string bytes, store_.ReadBytes(file));
  if (Sha256Hex(bytes) != record["statistics_sha256"].get<std::string>()) {
    return Corrupt(store_, file, "its SHA-256 is not the committed one");
  }
  if (absl::Status s = CountStatistics(round, client, bytes); !s.ok()) {
    return Corrupt(store_, file, absl::StrCat("does not fit the round: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status FederationJob::ReplayRound(const RoundRecord& saved, bool closed) {
  Round r = NewRound(saved.index);
  if (saved.layers != r.layers) {
    return absl::DataLossError(absl::StrCat(store_.dir(), "/", StateStore::RoundFile(saved.index), ": layers [",
                                            absl::StrJoin(saved.layers, ","), "] are not the round's [",
                                            absl::StrJoin(r.layers, ","), "]"));
  }
  RETURN_IF_ERROR(pruner_.OpenRound(saved.index, std::vector<int64_t>(r.layers.begin(), r.layers.end()),
                                    static_cast<int>(config_.allowed_clients.size())));
  round_statistics_.clear();
  for (const nlohmann::json& record : saved.commits) {
    const std::string client = record["client"].get<std::string>();
    if (strategy_ == Strategy::kExact) {
      RETURN_IF_ERROR(ReplayStatistics(saved.index, client, record));
      r.committed.insert(client);
      continue;
    }
    ASSIGN_OR_RETURN(std::shared_ptr<const MaskSetFile> upload, OpenCommittedUpload(store_, saved.index, record));
    if (absl::Status s = CountUpload(client, upload); !s.ok()) {
      return absl::DataLossError(absl::StrCat(store_.dir(), "/", StateStore::UploadFile(saved.index, client),
                                              ": does not fit the round: ", s.message()));
    }
    r.committed.insert(client);
  }
  static_cast<RoundRecord&>(r) = saved;
  if (closed) {
    ASSIGN_OR_RETURN(Decided decided, Decide(saved.index, /*publish=*/false));
    if (!MaskSetFile::Open(store_.Path(StateStore::DecisionMaskFile(saved.index)), decided.masks_sha256).ok()) {
      return absl::DataLossError(absl::StrCat(store_.dir(), "/", StateStore::DecisionMaskFile(saved.index),
                                              ": differs from the decision its committed uploads give"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (first_round_opened_ms_ == 0) first_round_opened_ms_ = r.opened_ms;
  rounds_.push_back(std::move(r));
  return absl::OkStatus();
}

absl::Status FederationJob::Resume(const RecoveredJob& saved) {
  resumed_ = true;
  if (saved.removed_temp_files > 0) {
    spdlog::info("job {}: removed {} unfinished *.tmp files", job_id_, saved.removed_temp_files);
  }
  for (const std::string& orphan : saved.removed_orphan_uploads) {
    spdlog::info("job {}: removed the uncommitted upload of {}", job_id_, orphan);
  }
  for (const RoundRecord& round : saved.rounds) {
    RETURN_IF_ERROR(ReplayRound(round, round.phase == RoundPhase::kClosed));
  }
  const int64_t now = clock_();
  absl::MutexLock lock(&mu_);
  sites_.RestoreParticipants(saved.participants, now);
  join_phase_started_ms_ = now;
  for (const auto& [key, value] : saved.phases.items()) phases_[key] = value;
  if (saved.state == "DONE") {
    state_ = JobState::kDone;
    return absl::OkStatus();
  }
  if (rounds_.empty()) return absl::OkStatus();  // still waiting for sites
  state_ = JobState::kRunning;
  Round& last = rounds_.back();
  switch (last.phase) {
    case RoundPhase::kOpen:
      if (last.deadline_ms < now + int64_t{1000} * config_.resume_grace_seconds) {
        last.deadline_ms = now + int64_t{1000} * config_.resume_grace_seconds;
        RETURN_IF_ERROR(store_.WriteJson(StateStore::RoundFile(last.index), RoundRecordJson(last)));
      }
      break;
    case RoundPhase::kAggregating:
      resume_action_ = ResumeAction::kCloseRound;
      break;
    case RoundPhase::kClosed:
      resume_action_ = last.index + 1 < NumRounds() ? ResumeAction::kOpenNextRound : ResumeAction::kWriteModel;
      break;
  }
  if (saved.state == "WRITING_MODEL") resume_action_ = ResumeAction::kWriteModel;
  return absl::OkStatus();
}

}  // namespace fedprllm
