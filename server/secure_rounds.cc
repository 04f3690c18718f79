// The secure sum of an exact round on the server (docs/secure_aggregation.md, "Transport"):
// it relays the sites' keys and sealed shares, collects their masked inputs and unmask
// answers, and commits only the decoded sum, as the round's one statistics record.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "secagg/fixed_point.h"
#include "secagg/secagg_proto.h"
#include "server/federation_job.h"

namespace fedprllm {
namespace {

enum StepIndex { kAdvertiseStep = 0, kShareStep = 1, kInputStep = 2, kUnmaskStep = 3 };

// The same message again is the same step retried; a different one is refused.
absl::Status TakeStep(std::map<std::string, std::string>& taken, const std::string& site, std::string message,
                      const char* step) {
  auto [it, inserted] = taken.emplace(site, std::move(message));
  if (!inserted && it->second != message) {
    return absl::AlreadyExistsError(absl::StrCat(site, " already took the ", step, " step with another message"));
  }
  return absl::OkStatus();
}

absl::Status Restarted(int round) {
  return absl::AbortedError(absl::StrCat("the secure aggregation of round ", round,
                                         " restarted; start again from ADVERTISE"));
}

}  // namespace

secagg::SessionConfig FederationJob::SecureSessionLocked(int round) const {
  secagg::SessionConfig session;
  session.job_id = job_id_;
  session.round = round;
  session.sites.assign(job_spec_.secure_aggregation().sites().begin(), job_spec_.secure_aggregation().sites().end());
  session.threshold = job_spec_.secure_aggregation().threshold();
  int64_t words = 1;
  for (int64_t width : StatisticWidths(pruner_.base_model().config())) words += width;  // config is immutable
  session.length = static_cast<size_t>(words);
  return session;
}

absl::StatusOr<v1::SecAggResponse> FederationJob::SecureAggregate(const v1::SecAggRequest& request,
                                                                  const std::string& peer) {
  absl::MutexLock lock(&mu_);
  if (!config_.secure_aggregation) {
    return absl::FailedPreconditionError("this job does not use secure aggregation");
  }
  ASSIGN_OR_RETURN(const std::string site, ClientOfTokenLocked(request.session_token(), peer));
  const int round = request.round();
  // A site's unmask answer is answered ready only once the sum is committed: until then a
  // restart of the server loses the aggregation, and the site must run it again.
  if (request.step() == v1::SECAGG_STEP_UNMASK && request.has_unmask() && secure_.has_value() &&
      secure_->round == round && secure_->taken[kUnmaskStep].count(site) != 0 &&
      round < static_cast<int>(rounds_.size()) && rounds_[round].committed.count(kSecureSumSite) != 0) {
    v1::SecAggResponse done;
    done.set_ready(true);
    return done;
  }
  if (round < 0 || round >= static_cast<int>(rounds_.size()) || rounds_[round].phase != RoundPhase::kOpen ||
      state_ != JobState::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat("round ", round, " is not open"));
  }
  if (!secure_.has_value() || secure_->round != round) {
    secure_.emplace();
    secure_->round = round;
    secure_->server = std::make_unique<secagg::SecAggServer>(SecureSessionLocked(round));
  }
  SecureSum& sum = *secure_;
  using Phase = SecureSum::Phase;
  v1::SecAggResponse response;
  switch (request.step()) {
    case v1::SECAGG_STEP_ADVERTISE: {
      const std::string message = request.advertisement().SerializeAsString();
      const auto known = sum.taken[kAdvertiseStep].find(site);
      if (known == sum.taken[kAdvertiseStep].end()) {
        if (sum.phase != Phase::kAdvertising) {
          return absl::FailedPreconditionError(absl::StrCat("the key exchange of round ", round, " is over"));
        }
        ASSIGN_OR_RETURN(secagg::KeyAdvertisement advertisement, secagg::FromProto(request.advertisement()));
        if (advertisement.site != site) {
          return absl::PermissionDeniedError(absl::StrCat(site, " advertised keys as '", advertisement.site, "'"));
        }
        RETURN_IF_ERROR(sum.server->AddAdvertisement(std::move(advertisement)));
        sum.taken[kAdvertiseStep].emplace(site, message);
        spdlog::info("round {}: secure aggregation: {} advertised its keys ({} of {} live sites)", round, site,
                     sum.taken[kAdvertiseStep].size(), sites_.LiveParticipants().size());
      } else {
        RETURN_IF_ERROR(TakeStep(sum.taken[kAdvertiseStep], site, message, "ADVERTISE"));
      }
      break;
    }
    case v1::SECAGG_STEP_SHARE: {
      if (sum.taken[kAdvertiseStep].count(site) == 0) return Restarted(round);
      std::string message;
      for (const v1::SecAggSealedShares& s : request.shares()) message += s.SerializeAsString();
      if (sum.taken[kShareStep].count(site) == 0) {
        if (sum.phase != Phase::kSharing) {
          return sum.phase == Phase::kAdvertising
                     ? Restarted(round)
                     : absl::FailedPreconditionError(absl::StrCat("the share step of round ", round, " is over"));
        }
        std::vector<secagg::SealedShares> shares;
        for (const v1::SecAggSealedShares& s : request.shares()) shares.push_back(secagg::FromProto(s));
        RETURN_IF_ERROR(sum.server->AddShares(site, std::move(shares)));
      }
      RETURN_IF_ERROR(TakeStep(sum.taken[kShareStep], site, std::move(message), "SHARE"));
      break;
    }
    case v1::SECAGG_STEP_MASKED_INPUT: {
      if (sum.taken[kShareStep].count(site) == 0) return Restarted(round);
      const std::string message(reinterpret_cast<const char*>(request.masked_input().data()),
                                sizeof(uint64_t) * request.masked_input().size());
      if (sum.taken[kInputStep].count(site) == 0) {
        if (sum.phase != Phase::kInput) {
          return absl::FailedPreconditionError(absl::StrCat("the input step of round ", round, " is over"));
        }
        RETURN_IF_ERROR(sum.server->AddMaskedInput(
            site, std::vector<uint64_t>(request.masked_input().begin(), request.masked_input().end())));
        spdlog::info("round {}: secure aggregation: masked input of {} ({} words)", round, site,
                     request.masked_input().size());
      }
      RETURN_IF_ERROR(TakeStep(sum.taken[kInputStep], site, message, "MASKED_INPUT"));
      break;
    }
    case v1::SECAGG_STEP_UNMASK: {
      if (sum.taken[kInputStep].count(site) == 0) return Restarted(round);
      if (request.has_unmask() && sum.taken[kUnmaskStep].count(site) == 0) {
        if (sum.phase != Phase::kUnmasking) {
          return absl::FailedPreconditionError(absl::StrCat("round ", round, " is not unmasking"));
        }
        ASSIGN_OR_RETURN(secagg::UnmaskResponse answer, secagg::FromProto(request.unmask()));
        if (answer.from != site) return absl::PermissionDeniedError(absl::StrCat(site, " answered as '", answer.from, "'"));
        RETURN_IF_ERROR(sum.server->AddUnmaskResponse(std::move(answer)));
      }
      if (request.has_unmask()) {
        RETURN_IF_ERROR(TakeStep(sum.taken[kUnmaskStep], site, request.unmask().SerializeAsString(), "UNMASK"));
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown secure aggregation step ", request.step()));
  }
  if (std::string why = AdvanceSecureSumLocked(); !why.empty()) {
    if (abort_reason_.empty()) abort_reason_ = why;  // the worker fails the job at its next tick
    return absl::AbortedError(why);
  }
  switch (request.step()) {
    case v1::SECAGG_STEP_ADVERTISE:
      response.set_ready(sum.phase != Phase::kAdvertising);
      if (response.ready()) *response.mutable_advertisements() = {sum.advertisements.begin(), sum.advertisements.end()};
      break;
    case v1::SECAGG_STEP_SHARE:
      response.set_ready(sum.phase != Phase::kAdvertising && sum.phase != Phase::kSharing);
      if (response.ready()) {
        for (const secagg::SealedShares& s : sum.server->SharesFor(site)) *response.add_shares() = secagg::ToProto(s);
      }
      break;
    case v1::SECAGG_STEP_MASKED_INPUT:
      response.set_ready(true);
      break;
    case v1::SECAGG_STEP_UNMASK:
      response.set_ready(request.has_unmask() ? rounds_[round].committed.count(kSecureSumSite) != 0
                                              : sum.phase == Phase::kUnmasking || sum.phase == Phase::kSummed);
      if (!request.has_unmask() && response.ready()) secagg::SetUnmaskRequest(sum.unmask, &response);
      break;
    default:
      break;
  }
  return response;
}

std::string FederationJob::AdvanceSecureSumLocked() {
  if (!secure_.has_value() || rounds_.empty() || secure_->round != rounds_.back().index ||
      rounds_.back().phase != RoundPhase::kOpen) {
    return "";
  }
  SecureSum& sum = *secure_;
  using Phase = SecureSum::Phase;
  const int round = sum.round;
  const std::vector<std::string> live_list = sites_.LiveParticipants();
  const std::set<std::string> live(live_list.begin(), live_list.end());
  const int threshold = job_spec_.secure_aggregation().threshold();
  // Every live site that took step `before` has taken step `step`.
  auto all_live_took = [&](int before, int step) {
    for (const auto& [site, message] : sum.taken[before]) {
      if (live.count(site) != 0 && sum.taken[step].count(site) == 0) return false;
    }
    return true;
  };
  if (sum.phase == Phase::kAdvertising) {
    for (const std::string& site : live) {
      if (sum.taken[kAdvertiseStep].count(site) == 0) return "";
    }
    if (static_cast<int>(sum.taken[kAdvertiseStep].size()) < threshold) return "";
    absl::StatusOr<std::vector<secagg::KeyAdvertisement>> ads = sum.server->Advertisements();
    if (!ads.ok()) return absl::StrCat("secure aggregation of round ", round, ": ", ads.status().message());
    for (const secagg::KeyAdvertisement& a : *ads) sum.advertisements.push_back(secagg::ToProto(a));
    sum.phase = Phase::kSharing;
    spdlog::info("round {}: secure aggregation: keys of {} sites relayed", round, ads->size());
  }
  if (sum.phase == Phase::kSharing) {
    if (!all_live_took(kAdvertiseStep, kShareStep)) return "";
    sum.phase = Phase::kInput;
    spdlog::info("round {}: secure aggregation: shares of {} sites relayed", round, sum.taken[kShareStep].size());
  }
  if (sum.phase == Phase::kInput) {
    if (!all_live_took(kShareStep, kInputStep)) return "";
    absl::StatusOr<secagg::UnmaskRequest> unmask = sum.server->CloseInputs();
    if (!unmask.ok()) return absl::StrCat("secure aggregation of round ", round, ": ", unmask.status().message());
    sum.unmask = *std::move(unmask);
    sum.phase = Phase::kUnmasking;
    spdlog::info("round {}: secure aggregation: inputs closed; survivors [{}], dropped after the key exchange [{}]",
                 round, absl::StrJoin(sum.unmask.survivors, ", "), absl::StrJoin(sum.unmask.dropped, ", "));
  }
  if (sum.phase == Phase::kUnmasking) {
    int answered = 0;
    for (const std::string& site : sum.unmask.survivors) {
      if (sum.taken[kUnmaskStep].count(site) != 0) {
        ++answered;
      } else if (live.count(site) != 0) {
        return "";  // a live survivor has not answered yet
      }
    }
    if (answered < threshold) {
      return absl::StrCat("secure aggregation of round ", round, ": ", answered, " unmask answers, ", threshold,
                          " needed");
    }
    absl::StatusOr<std::vector<uint64_t>> words = sum.server->Sum();
    if (!words.ok()) return absl::StrCat("secure aggregation of round ", round, ": ", words.status().message());
    secagg::FixedPointCode code;
    code.fraction_bits = job_spec_.secure_aggregation().fraction_bits();
    absl::StatusOr<std::vector<double>> values =
        secagg::DecodeFixedPointSum(*words, static_cast<int>(sum.unmask.survivors.size()), /*nonnegative=*/true, code);
    if (!values.ok()) {
      return absl::StrCat("secure aggregation of round ", round, ": the sum overflowed: ", values.status().message());
    }
    // The record layout: the token count, then the column sums (docs/round_protocol.md §4).
    LayerStatistics pooled;
    pooled.layer = round;
    const double tokens = (*values)[0];
    if (!(tokens >= 1 && tokens == std::floor(tokens) && tokens < 9.007199254740992e15)) {
      return absl::StrCat("secure aggregation of round ", round, ": the summed token count ", tokens,
                          " is not a positive integer");
    }
    pooled.tokens = static_cast<int64_t>(tokens);
    size_t offset = 1;
    const std::array<int64_t, kNumStatisticInputs> widths = StatisticWidths(pruner_.base_model().config());
    for (int i = 0; i < kNumStatisticInputs; ++i) {
      pooled.column_sums[i] = at::from_blob(values->data() + offset, {widths[i]}, at::kDouble).clone();
      offset += widths[i];
    }
    absl::StatusOr<std::string> record = EncodeStatistics(pooled);
    if (!record.ok()) return absl::StrCat("secure aggregation of round ", round, ": ", record.status().message());
    sum.phase = Phase::kSummed;
    spdlog::info("round {}: secure aggregation: summed the statistics of {} sites ({} tokens)", round,
                 sum.unmask.survivors.size(), pooled.tokens);
    UploadTicket ticket;
    ticket.client = kSecureSumSite;
    ticket.round = round;
    ticket.tensors = rounds_.back().tensors;
    ticket.table = &tensor_table_;
    UploadStats stats;
    stats.payload_bytes = static_cast<int64_t>(record->size());
    stats.tensors = kNumStatisticInputs;
    stats.weights = rounds_.back().weights;
    const std::vector<std::string> survivors = sum.unmask.survivors;
    queue_.push_back(CommitTask{std::move(ticket), nullptr, *std::move(record), stats,
                                [round, survivors](absl::StatusOr<v1::UploadAck> ack) {
                                  if (!ack.ok()) {
                                    spdlog::error("round {}: the secure sum of [{}] could not be committed: {}", round,
                                                  absl::StrJoin(survivors, ", "), std::string(ack.status().message()));
                                  }
                                },
                                survivors});
  }
  return "";
}

}  // namespace fedprllm
