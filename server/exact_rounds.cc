// The exact strategy's rounds on the server (docs/round_protocol.md §4, "Exact"): sites'
// statistics records are checked, committed like uploads and kept until the round closes;
// the round's decision is centralized Wanda's on the pooled statistics.
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "server/federation_job.h"

namespace fedprllm {

void FederationJob::CommitStatistics(const std::string& token, const std::string& peer,
                                     const v1::StatisticsUpload& upload, AckCallback done) {
  if (strategy_ != Strategy::kExact) {
    done(absl::InvalidArgumentError(
        absl::StrCat("this job's strategy is ", StrategyName(strategy_), ": sites send masks, not statistics")));
    return;
  }
  if (config_.secure_aggregation) {
    done(absl::InvalidArgumentError("this job sums the sites' statistics securely: send them with SecureAggregate"));
    return;
  }
  absl::StatusOr<UploadTicket> ticket = TakeTicket(token, peer, upload.round());
  if (!ticket.ok()) {
    done(ticket.status());
    return;
  }
  UploadStats stats;
  stats.wire_bytes = static_cast<int64_t>(upload.ByteSizeLong()) + 5;
  stats.payload_bytes = static_cast<int64_t>(upload.statistics().size());
  stats.tensors = kNumStatisticInputs;
  for (const auto& [name, shape] : *ticket->tensors) stats.weights += NumElements(shape);
  if (!ticket->duplicate) {
    absl::Status checked;
    if (upload.layer() != upload.round()) {
      checked = absl::InvalidArgumentError(absl::StrCat("statistics of layer ", upload.layer(), " sent for round ",
                                                        upload.round(), ", which decides layer ", upload.round()));
    } else if (crc32c::Value(upload.statistics().data(), upload.statistics().size()) != upload.crc32c()) {
      checked = absl::DataLossError(absl::StrCat("statistics of layer ", upload.layer(), ": CRC-32C mismatch"));
    } else {
      checked = DecodeStatistics(pruner_.base_model().config(), upload.layer(), upload.statistics()).status();
    }
    if (!checked.ok()) {
      AbortUpload(*ticket);
      spdlog::warn("statistics from {} for round {} refused: {}", ticket->client, upload.round(),
                   std::string(checked.message()));
      done(absl::Status(checked.code(), absl::StrCat(ticket->client, ": ", checked.message())));
      return;
    }
  }
  std::string record = ticket->duplicate ? std::string() : upload.statistics();
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back(CommitTask{*std::move(ticket), nullptr, std::move(record), stats, std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError("server is shutting down"));
}

absl::Status FederationJob::CountStatistics(int round, const std::string& client, const std::string& record) {
  ASSIGN_OR_RETURN(LayerStatistics statistics, DecodeStatistics(pruner_.base_model().config(), round, record));
  if (!round_statistics_.emplace(client, std::move(statistics)).second) {
    return absl::AlreadyExistsError(absl::StrCat("statistics of ", client, " are already counted in round ", round));
  }
  return absl::OkStatus();
}

absl::Status FederationJob::CloseExactRoundInto(int round, const DecisionSink& sink) {
  if (round_statistics_.empty()) return absl::FailedPreconditionError(absl::StrCat("round ", round, " has no statistics"));
  std::vector<LayerStatistics> sites;
  std::vector<std::string> names;
  for (const auto& [site, statistics] : round_statistics_) {  // site-name order
    if (statistics.layer != round) {
      return absl::InternalError(absl::StrCat("statistics of ", site, " are of layer ", statistics.layer));
    }
    sites.push_back(statistics);
    names.push_back(site);
  }
  ASSIGN_OR_RETURN(const LayerStatistics pooled, PoolStatistics(sites));
  ASSIGN_OR_RETURN(const LayerMasks masks,
                   MasksFromStatistics(pruner_.base_model(), pooled, aggregation_.group, aggregation_.pattern));
  RETURN_IF_ERROR(pruner_.CloseRoundWithMasks(masks, names, sink));
  spdlog::info("round {}: layer {} decided from the statistics of {} sites ({} pooled tokens)", round, round,
               names.size(), pooled.tokens);
  round_statistics_.clear();
  return absl::OkStatus();
}

}  // namespace fedprllm
