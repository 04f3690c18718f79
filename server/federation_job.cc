// The server's job: joins, the round state machine, validated uploads committed to the vote
// counters, decisions, persistence to the state directory, and the final model and report.
#include "server/federation_job.h"
#include "server/job_recovery.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/crash_point.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "model/torch_wall.h"
#include "proto/payload_convert.h"

namespace fedprllm {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string NewToken() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // no entropy: never hand out guessable tokens
  static const char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 15]);
  }
  return token;
}

v1::JobSpec BuildJobSpec(const ServerConfig& config, const LlamaModel& model, Strategy strategy,
                         const AggregationOptions& aggregation) {
  v1::JobSpec spec;
  switch (strategy) {
    case Strategy::kOneShot: spec.set_strategy(v1::STRATEGY_ONE_SHOT); break;
    case Strategy::kIterative: spec.set_strategy(v1::STRATEGY_ITERATIVE); break;
    case Strategy::kExact: spec.set_strategy(v1::STRATEGY_EXACT); break;
  }
  spec.set_sparsity(aggregation.pattern.structured()
                        ? static_cast<double>(aggregation.pattern.n) / aggregation.pattern.m
                        : aggregation.pattern.sparsity);
  spec.mutable_pattern()->set_n(aggregation.pattern.n);
  spec.mutable_pattern()->set_m(aggregation.pattern.m);
  spec.set_num_layers(static_cast<int32_t>(model.config().num_hidden_layers));
  for (int64_t layer = 0; layer < model.config().num_hidden_layers; ++layer) {
    for (const char* linear : kLinearNames) {
      v1::TensorSpec* t = spec.add_tensors();
      t->set_name(LayerTensorName(layer, linear));
      for (int64_t d : model.tensors().at(t->name()).sizes()) t->add_shape(d);
      t->set_layer(static_cast<int32_t>(layer));
    }
  }
  spec.set_weight_scaling(aggregation.weight_scaling);
  spec.set_max_chunk_bytes(static_cast<uint32_t>(config.max_chunk_bytes));
  spec.set_upload_idle_timeout_seconds(static_cast<uint32_t>(config.upload_idle_timeout_seconds));
  if (config.secure_aggregation) {
    v1::SecureAggregationSpec* secure = spec.mutable_secure_aggregation();
    secure->set_enabled(true);
    secure->set_threshold(config.SecureThreshold());
    secure->set_fraction_bits(config.secure_aggregation_fraction_bits);
    std::vector<std::string> sites = config.allowed_clients;
    std::sort(sites.begin(), sites.end());
    for (const std::string& site : sites) secure->add_sites(site);
  }
  return spec;
}

nlohmann::json ConfigDigestJson(const ServerConfig& c) {
  return {{"job_name", c.job_name},
          {"strategy", c.strategy},       {"sparsity", c.sparsity},          {"pattern", c.pattern},
          {"group", c.group},             {"weight_scaling", c.weight_scaling}, {"tie_break", c.tie_break},
          {"seed", c.seed},               {"allowed_clients", c.allowed_clients},
          {"expected_clients", c.expected_clients}, {"min_clients", c.min_clients}};
}

// ConfigDigestJson plus the outlier rule when it can change the decision (exclude), so the
// job id of a job under the default rule is what it was before the rule existed.
nlohmann::json JobDigestJson(const ServerConfig& c) {
  nlohmann::json digest = ConfigDigestJson(c);
  if (c.outlier_policy != "report") {
    digest["outlier_policy"] = c.outlier_policy;
    digest["outlier_z_threshold"] = c.outlier_z_threshold;
    digest["outlier_min_gap"] = c.outlier_min_gap;
    digest["outlier_min_sites"] = c.outlier_min_sites;
  }
  return digest;
}

// Appends `payload` to a DecisionChunk stream of `round`: its header, then its chunks.
absl::Status AppendDecisionPayload(int round, const EncodedPayload& payload, const JobTensorTable& table,
                                   std::vector<v1::DecisionChunk>* stream) {
  v1::DecisionChunk header;
  header.set_round(round);
  RETURN_IF_ERROR(HeaderToProto(payload.header, table, header.mutable_header()));
  stream->push_back(std::move(header));
  for (const PayloadChunk& c : payload.chunks) {
    v1::DecisionChunk chunk;
    chunk.set_round(round);
    ChunkToProto(c, chunk.mutable_chunk());
    stream->push_back(std::move(chunk));
  }
  return absl::OkStatus();
}

// Float32 values of a scale tensor, for the state directory.
absl::StatusOr<FloatTensor> ScaleValues(const std::string& name, const at::Tensor& scale) {
  ASSIGN_OR_RETURN(at::Tensor values, TorchCall(absl::StrCat("reading the scales of ", name), [&] {
                     return scale.to(at::kCPU, at::kFloat).contiguous();
                   }));
  return FloatTensor{values.sizes().vec(),
                     std::vector<float>(values.data_ptr<float>(), values.data_ptr<float>() + values.numel())};
}

int64_t LayerOfTensor(const std::string& name) { return std::stoll(name.substr(std::string("model.layers.").size())); }

// Creates `dir` if needed and proves it writable by creating and removing a file in it.
absl::Status CheckWritableDirectory(const std::string& dir, const char* key) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("config key '", key, "': cannot create ", dir, ": ", ec.message()));
  }
  const std::string probe = (std::filesystem::path(dir) / ".fedprllm-write-check").string();
  if (absl::Status s = AtomicWriteFile(probe, "ok\n"); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("config key '", key, "': ", dir, " is not writable: ", s.message()));
  }
  std::filesystem::remove(probe, ec);
  return absl::OkStatus();
}

}  // namespace

int64_t SystemClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::unique_ptr<FederationJob>> FederationJob::Create(ServerConfig config, LlamaModel model,
                                                                     std::string tokenizer_path, ClockMs clock,
                                                                     StateWriteHook write_hook) {
  ASSIGN_OR_RETURN(const Strategy strategy, config.ParsedStrategy());
  ASSIGN_OR_RETURN(const AggregationOptions aggregation, config.Aggregation());
  RETURN_IF_ERROR(aggregation.pattern.Validate());
  ASSIGN_OR_RETURN(const OutlierOptions outliers, config.Outliers());
  RETURN_IF_ERROR(outliers.Validate());
  ASSIGN_OR_RETURN(const SiteGroup site_group, ParseSiteGroup(config.site_group));
  for (int64_t layer = 0; layer < model.config().num_hidden_layers; ++layer) {
    for (const char* linear : kLinearNames) {
      const std::string name = LayerTensorName(layer, linear);
      auto it = model.tensors().find(name);
      if (it == model.tensors().end()) return absl::InvalidArgumentError(absl::StrCat("model has no tensor ", name));
      if (absl::Status s = aggregation.pattern.CheckShape(it->second.sizes().vec()); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("config key 'pattern': tensor ", name, ": ", s.message()));
      }
    }
  }
  std::string fingerprint = model.Fingerprint();
  const std::string job_id =
      "job-" + Sha256Hex(fingerprint + "\n" + JobDigestJson(config).dump()).substr(0, 16);
  RETURN_IF_ERROR(CheckWritableDirectory(config.state_dir, "state_dir"));
  RETURN_IF_ERROR(CheckWritableDirectory(config.output_dir, "output_dir"));
  ASSIGN_OR_RETURN(StateStore store, StateStore::Open(config.state_dir, job_id, std::move(write_hook)));
  std::unique_ptr<FederationJob> job(new FederationJob(std::move(config), std::move(model), std::move(tokenizer_path),
                                                       std::move(clock), std::move(store), std::move(fingerprint),
                                                       job_id, strategy, aggregation, outliers, site_group));
  if (job->store_.has_state()) {
    ASSIGN_OR_RETURN(RecoveredJob saved, ReadJobState(job->store_, job->Manifest()));
    if (saved.state == "FAILED") {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " FAILED earlier: ", saved.failure,
                                                        "; its report is in output_dir. To run it again, move ",
                                                        job->store_.dir(), " away"));
    }
    RETURN_IF_ERROR(job->Resume(saved));
  }
  return job;
}

FederationJob::FederationJob(ServerConfig config, LlamaModel model, std::string tokenizer_path, ClockMs clock,
                             StateStore store, std::string fingerprint, std::string job_id, Strategy strategy,
                             AggregationOptions aggregation, OutlierOptions outliers, SiteGroup site_group)
    : config_(std::move(config)),
      tokenizer_path_(std::move(tokenizer_path)),
      clock_(std::move(clock)),
      store_(std::move(store)),
      fingerprint_(std::move(fingerprint)),
      job_id_(std::move(job_id)),
      strategy_(strategy),
      aggregation_(aggregation),
      allowlist_(config_.allowed_clients.begin(), config_.allowed_clients.end()),
      num_layers_(static_cast<int>(model.config().num_hidden_layers)),
      job_spec_(BuildJobSpec(config_, model, strategy, aggregation)),
      tensor_table_(job_spec_),
      plausibility_(std::make_shared<const MaskPlausibility>(site_group, aggregation.pattern)),
      created_ms_(clock_()),
      pruner_(std::move(model), aggregation, outliers),
      sites_(config_.allowed_clients, int64_t{1000} * config_.site_timeout_seconds),
      join_phase_started_ms_(created_ms_) {}

FederationJob::~FederationJob() { Stop(); }

int FederationJob::NumRounds() const { return strategy_ == Strategy::kOneShot ? 1 : num_layers_; }

size_t FederationJob::LiveSites() const {
  absl::MutexLock lock(&mu_);
  return sites_.LiveParticipants().size();
}

int FederationJob::RoundsClosed() const {
  absl::MutexLock lock(&mu_);
  int closed = 0;
  for (const Round& r : rounds_) closed += r.phase == RoundPhase::kClosed ? 1 : 0;
  return closed;
}

void FederationJob::Abort(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (abort_reason_.empty()) abort_reason_ = reason;
}

void FederationJob::Decline(const std::string& site, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (!sites_.allowed(site) || state_ == JobState::kDone || state_ == JobState::kFailed) return;
  if (declined_.emplace(site, reason).second) spdlog::warn("site {} declined the job: {}", site, reason);
}

nlohmann::json FederationJob::StatusDetail() const {
  static const char* kStates[] = {"WAITING_FOR_SITES", "RUNNING", "WRITING_MODEL", "DONE", "FAILED"};
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_();
  const Round* open = !rounds_.empty() ? &rounds_.back() : nullptr;
  nlohmann::json detail = {{"job", config_.job_name},
                           {"job_id", job_id_},
                           {"state", kStates[static_cast<int>(state_)]},
                           {"rounds", NumRounds()},
                           {"round", open != nullptr ? open->index : -1},
                           {"round_state", open != nullptr ? RoundPhaseName(open->phase) : ""},
                           {"committed", open != nullptr ? static_cast<int>(open->committed.size()) : 0},
                           {"expected", config_.expected_clients},
                           {"min", config_.min_clients},
                           {"failure", failure_}};
  detail["deadline_in_seconds"] =
      open != nullptr && open->phase == RoundPhase::kOpen ? nlohmann::json((open->deadline_ms - now) / 1000.0)
                                                          : nlohmann::json();
  // Expected time left: the mean duration of the closed rounds times the rounds left, less
  // the time the open one has run.
  int closed = 0;
  double closed_ms = 0;
  for (const Round& r : rounds_) {
    if (r.phase != RoundPhase::kClosed) continue;
    ++closed;
    closed_ms += static_cast<double>(r.closed_ms - r.opened_ms);
  }
  nlohmann::json eta;
  if (state_ == JobState::kDone) {
    eta = 0.0;
  } else if (closed > 0 && state_ == JobState::kRunning) {
    const double mean = closed_ms / closed;
    const int left = NumRounds() - closed;
    const double running = open != nullptr && open->phase == RoundPhase::kOpen ? now - open->opened_ms : 0.0;
    eta = std::max(0.0, (mean * left - running) / 1000.0);
  }
  detail["eta_seconds"] = eta;
  nlohmann::json sites = nlohmann::json::array();
  for (const std::string& name : config_.allowed_clients) {
    const SiteRegistry::Site& site = sites_.site(name);
    std::string state;
    if (declined_.count(name) != 0) {
      state = "declined";
    } else if (!site.participant) {
      state = "not joined";
    } else if (site.lost) {
      state = "lost";
    } else if (open != nullptr && open->committed.count(name) != 0 && state_ == JobState::kRunning) {
      state = "committed";
    } else {
      switch (site.activity) {
        case v1::SITE_ACTIVITY_FETCHING: state = "fetching"; break;
        case v1::SITE_ACTIVITY_CALIBRATING: state = "calibrating"; break;
        case v1::SITE_ACTIVITY_UPLOADING: state = "uploading"; break;
        default: state = "waiting"; break;
      }
    }
    const auto traffic = traffic_.find(name);
    const bool committed_now = traffic != traffic_.end() && open != nullptr && traffic->second.commit_round == open->index;
    sites.push_back({{"site", name},
                     {"state", state},
                     {"layer", site.layer},
                     {"layers_done", site.layers_done},
                     {"layers_total", site.layers_total},
                     {"batches_done", site.batches_done},
                     {"batches_total", site.batches_total},
                     {"eta_seconds",
                      site.eta_seconds > 0 && !site.lost ? nlohmann::json(site.eta_seconds) : nlohmann::json()},
                     {"last_seen_seconds_ago", site.participant ? (now - site.last_seen_ms) / 1000.0 : -1.0},
                     {"bytes", traffic != traffic_.end() ? traffic->second.bytes : 0},
                     {"commit_seconds", committed_now ? nlohmann::json(traffic->second.commit_seconds) : nlohmann::json()},
                     {"detail", declined_.count(name) != 0 ? declined_.at(name)
                                : site.lost                ? "silent past site_timeout_seconds"
                                : site.participant         ? SiteRegistry::DescribeActivity(site)
                                                           : ""}});
  }
  detail["sites"] = std::move(sites);
  return detail;
}

std::vector<int32_t> FederationJob::LayersOfRound(int round) const {
  if (strategy_ != Strategy::kOneShot) return {round};
  std::vector<int32_t> all(num_layers_);
  for (int i = 0; i < num_layers_; ++i) all[i] = i;
  return all;
}

nlohmann::json FederationJob::Manifest() const {
  return {{"job_id", job_id_},
          {"protocol_version", kProtocolVersion},
          {"model", config_.model},
          {"model_fingerprint", fingerprint_},
          {"config", ConfigDigestJson(config_)},
          {"num_rounds", NumRounds()},
          {"created_unix_ms", created_ms_}};
}

void FederationJob::Start() {
  absl::Status s;
  if (!resumed_) {
    s = store_.WriteJson("manifest.json", Manifest());
    absl::MutexLock lock(&mu_);
    if (s.ok()) s = PersistJobLocked();
  }
  if (!s.ok()) {
    Fail(absl::StrCat("cannot write the job state: ", s.message()));
    return;
  }
  if (resumed_) {
    const std::string participants = [this] {
      absl::MutexLock lock(&mu_);
      return absl::StrJoin(sites_.Participants(), ", ");
    }();
    spdlog::info("job {}: resuming from {} at {}; sites that had joined ({}) may reconnect", job_id_, store_.dir(),
                 ResumePoint(), participants);
  }
  spdlog::info("job {}: {} over {} decoder layers, sparsity {} {}, group {}, weight_scaling {}; waiting for {} of "
               "{} allowed clients (min {}), site timeout {} s, state in {}",
               job_id_, config_.strategy, num_layers_, config_.sparsity, config_.pattern, config_.group,
               config_.weight_scaling, config_.expected_clients, config_.allowed_clients.size(), config_.min_clients,
               config_.site_timeout_seconds, store_.dir());
  worker_ = std::thread([this] { WorkerLoop(); });
}

void FederationJob::Stop() {
  std::vector<Reply> replies;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (Waiter& w : waiters_) {
      replies.emplace_back(std::move(w.done), absl::UnavailableError("server is shutting down"));
    }
    waiters_.clear();
  }
  Deliver(std::move(replies));
  if (worker_.joinable()) worker_.join();
  // Commits still queued are answered so their reactors can finish; nothing of them was
  // persisted, so their clients upload again after a restart.
  std::deque<CommitTask> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
  }
  for (CommitTask& t : left) t.done(absl::UnavailableError("server is shutting down"));
}

bool FederationJob::finished() const {
  absl::MutexLock lock(&mu_);
  return state_ == JobState::kDone || state_ == JobState::kFailed;
}

std::string FederationJob::ResumePoint() const {
  absl::MutexLock lock(&mu_);
  switch (state_) {
    case JobState::kWaitingForClients:
      return "the join phase";
    case JobState::kWritingModel:
      return "the model write";
    case JobState::kDone:
      return "its end (DONE)";
    case JobState::kFailed:
      return "nothing (FAILED)";
    case JobState::kRunning:
      break;
  }
  const Round& r = rounds_.back();
  return absl::StrCat("round ", r.index, " of ", NumRounds(), " (", RoundPhaseName(r.phase), ", ",
                      r.committed.size(), " of ", config_.expected_clients, " sites committed)");
}

nlohmann::json FederationJob::SitesStatus() const {
  absl::MutexLock lock(&mu_);
  return sites_.StatusJson(clock_());
}

absl::Status FederationJob::WaitUntilFinished() {
  absl::MutexLock lock(&mu_);
  auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return state_ == JobState::kDone || state_ == JobState::kFailed || !shutdown_requested_.empty();
  };
  mu_.Await(absl::Condition(&ended));
  if (state_ == JobState::kDone) return absl::OkStatus();
  if (state_ == JobState::kFailed) return absl::AbortedError(failure_);
  return absl::CancelledError(absl::StrCat(shutdown_requested_, " received"));
}

void FederationJob::RequestShutdown(const std::string& why) {
  absl::MutexLock lock(&mu_);
  shutdown_requested_ = why;
}

std::vector<std::string> FederationJob::WaitForClientsToLearnOutcome(int64_t timeout_ms) {
  absl::MutexLock lock(&mu_);
  auto untold = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::string> out;
    for (const std::string& c : sites_.Participants()) {
      if (told_outcome_.count(c) == 0) out.push_back(c);
    }
    return out;
  };
  auto all_told = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return untold().empty(); };
  mu_.AwaitWithTimeout(absl::Condition(&all_told), absl::Milliseconds(timeout_ms));
  return untold();
}

void FederationJob::RecordPhase(const std::string& name, double seconds) {
  absl::MutexLock lock(&mu_);
  phases_[name] = seconds;
}

void FederationJob::Deliver(std::vector<Reply> replies) {
  for (auto& [done, result] : replies) done(std::move(result));
}

// ---- RPC entry points ------------------------------------------------------------------

absl::StatusOr<v1::JoinResponse> FederationJob::Join(const std::string& identity, const v1::JoinRequest& request) {
  if (request.protocol_version() != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat("protocol version mismatch: server speaks ", kProtocolVersion,
                                                      ", client sent ", request.protocol_version()));
  }
  if (request.model_fingerprint() != fingerprint_) {
    return absl::FailedPreconditionError(absl::StrCat("model fingerprint mismatch: server has ", fingerprint_,
                                                      ", client sent ", request.model_fingerprint()));
  }
  v1::JoinResponse response;
  size_t joined = 0;
  bool returning = false;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("server is shutting down");
    if (!sites_.allowed(identity)) {
      return absl::PermissionDeniedError(absl::StrCat("site ", identity, " is not one of job ", config_.job_name,
                                                      "'s sites"));
    }
    declined_.erase(identity);
    returning = sites_.site(identity).participant;
    const std::string token = NewToken();
    RETURN_IF_ERROR(sites_.StartSession(identity, request.instance_id(), token, clock_()));
    joined = sites_.LiveParticipants().size();
    response.set_session_token(token);
    // A new participant is recorded before it is answered, so a restart still counts it.
    if (!returning) {
      if (absl::Status s = PersistJobLocked(); !s.ok()) {
        spdlog::error("cannot record that {} joined: {}", identity, std::string(s.message()));
      }
    }
  }
  response.set_job_id(job_id_);
  *response.mutable_job() = job_spec_;
  response.set_protocol_version(kProtocolVersion);
  spdlog::info("client {} joined{} ({} of {} expected live; name \"{}\")", identity, returning ? " again" : "", joined,
               config_.expected_clients, request.client_name());
  CrashPoint("joined");
  return response;
}

absl::StatusOr<std::string> FederationJob::ClientOfTokenLocked(const std::string& token, const std::string& peer) {
  return sites_.Authenticate(token, peer, clock_());
}

std::optional<v1::RoundAssignment> FederationJob::AnswerLocked(const std::string& client, int last_completed_round) {
  v1::RoundAssignment a;
  if (state_ == JobState::kDone || state_ == JobState::kFailed) {
    a.set_state(state_ == JobState::kDone ? v1::ROUND_STATE_JOB_DONE : v1::ROUND_STATE_JOB_FAILED);
    a.set_message(state_ == JobState::kDone ? "job done" : failure_);
    told_outcome_.insert(client);
    return a;
  }
  for (const Round& r : rounds_) {
    if (r.index > last_completed_round && r.phase == RoundPhase::kOpen) {
      a.set_state(v1::ROUND_STATE_OPEN);
      a.set_round(r.index);
      for (int32_t l : r.layers) a.add_layers(l);
      a.set_deadline_unix_ms(r.deadline_ms);
      return a;
    }
  }
  return std::nullopt;
}

uint64_t FederationJob::WaitForRound(const v1::WaitRequest& request, const std::string& peer, AssignmentCallback done) {
  absl::StatusOr<v1::RoundAssignment> result;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::string> client = ClientOfTokenLocked(request.session_token(), peer);
    if (!client.ok()) {
      result = client.status();
    } else if (stopping_) {
      result = absl::UnavailableError("server is shutting down");
    } else if (auto answer = AnswerLocked(*client, request.last_completed_round())) {
      sites_.SetActivity(*client, v1::SITE_ACTIVITY_WAITING, -1);
      result = *std::move(answer);
    } else {
      const uint64_t id = next_waiter_id_++;
      sites_.PollStarted(*client, clock_());
      waiters_.push_back(Waiter{id, *client, request.last_completed_round(),
                                clock_() + int64_t{1000} * config_.poll_window_seconds, std::move(done)});
      return id;
    }
  }
  done(std::move(result));
  return 0;
}

void FederationJob::CancelWait(uint64_t id) {
  AssignmentCallback done;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (it->id != id) continue;
      sites_.PollEnded(it->client, clock_());
      sites_.StreamCancelled(it->client);
      done = std::move(it->done);
      waiters_.erase(it);
      break;
    }
  }
  if (done) done(absl::CancelledError("the client went away"));
}

absl::StatusOr<v1::HeartbeatResponse> FederationJob::Heartbeat(const v1::HeartbeatRequest& request,
                                                               const std::string& peer) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::string client, ClientOfTokenLocked(request.session_token(), peer));
  sites_.Report(client, request, clock_());
  v1::HeartbeatResponse response;
  response.set_open_round(-1);
  if (!rounds_.empty() && rounds_.back().phase == RoundPhase::kOpen) response.set_open_round(rounds_.back().index);
  return response;
}

absl::StatusOr<UploadTicket> FederationJob::BeginUpload(const std::string& token, const std::string& peer, int round) {
  if (strategy_ == Strategy::kExact) {
    return absl::InvalidArgumentError("this job's strategy is exact: sites send statistics (UploadStatistics), not masks");
  }
  return TakeTicket(token, peer, round);
}

absl::StatusOr<UploadTicket> FederationJob::TakeTicket(const std::string& token, const std::string& peer, int round) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::string client, ClientOfTokenLocked(token, peer));
  if (round < 0 || round >= static_cast<int>(rounds_.size())) {
    return absl::FailedPreconditionError(absl::StrCat("round ", round, " is not open"));
  }
  Round& r = rounds_[round];
  UploadTicket ticket;
  ticket.client = client;
  ticket.round = round;
  ticket.tensors = r.tensors;
  ticket.table = &tensor_table_;
  ticket.pattern = MaskPattern{aggregation_.pattern.n, aggregation_.pattern.m};
  ticket.plausibility = plausibility_;
  ticket.max_chunk_bytes = config_.max_chunk_bytes;
  if (r.committed.count(client) != 0) {
    ticket.duplicate = true;
    return ticket;
  }
  if (r.phase != RoundPhase::kOpen) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", round, " is ", RoundPhaseName(r.phase), ", no longer accepting uploads"));
  }
  if (clock_() > r.deadline_ms) {
    return absl::FailedPreconditionError(absl::StrCat("round ", round, " is past its deadline"));
  }
  if (!r.in_flight.insert(client).second) {
    return absl::AbortedError(absl::StrCat("another upload from ", client, " for round ", round, " is in flight"));
  }
  sites_.SetActivity(client, v1::SITE_ACTIVITY_UPLOADING, round);
  CrashPoint("upload-begun");
  return ticket;
}

void FederationJob::AbortUpload(const UploadTicket& ticket) {
  absl::MutexLock lock(&mu_);
  if (ticket.round >= 0 && ticket.round < static_cast<int>(rounds_.size())) {
    rounds_[ticket.round].in_flight.erase(ticket.client);
  }
}

absl::StatusOr<std::unique_ptr<MaskSetWriter>> FederationJob::NewUploadSpool(const UploadTicket& ticket) const {
  static std::atomic<uint64_t> next_spool{0};
  ASSIGN_OR_RETURN(MaskSetWriter writer,
                   store_.NewMaskSet(StateStore::UploadFile(ticket.round, ticket.client),
                                     static_cast<uint32_t>(ticket.tensors->size()), absl::StrCat("spool", next_spool++)));
  return std::make_unique<MaskSetWriter>(std::move(writer));
}

void FederationJob::CommitUpload(UploadTicket ticket, std::unique_ptr<MaskSetWriter> spool, UploadStats stats,
                                 AckCallback done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back(CommitTask{std::move(ticket), std::move(spool), std::string(), stats, std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError("server is shutting down"));
}

absl::StatusOr<std::shared_ptr<const std::vector<v1::DecisionChunk>>> FederationJob::Decisions(
    const std::string& token, const std::string& peer, int round) {
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::string client, ClientOfTokenLocked(token, peer));
    if (round < 0 || round >= NumRounds()) {
      return absl::NotFoundError(absl::StrCat("round ", round, " does not exist; the job has ", NumRounds(), " rounds"));
    }
    if (round >= static_cast<int>(rounds_.size()) || rounds_[round].phase != RoundPhase::kClosed) {
      return absl::FailedPreconditionError(absl::StrCat("round ", round, " is not decided yet"));
    }
    sites_.SetActivity(client, v1::SITE_ACTIVITY_FETCHING, round + 1);
  }
  // Encoded per request from the files, outside the lock: a CLOSED round's files never change.
  return EncodeStoredDecision(round);
}

absl::StatusOr<std::shared_ptr<const std::vector<v1::DecisionChunk>>> FederationJob::EncodeStoredDecision(int round) const {
  ASSIGN_OR_RETURN(std::shared_ptr<const MaskSetFile> masks,
                   MaskSetFile::Open(store_.Path(StateStore::DecisionMaskFile(round))));
  std::map<std::string, FloatTensor> scales;
  if (store_.Exists(StateStore::DecisionScaleFile(round))) {
    ASSIGN_OR_RETURN(std::string bytes, store_.ReadBytes(StateStore::DecisionScaleFile(round)));
    ASSIGN_OR_RETURN(scales, DecodeFloatSet(bytes, store_.Path(StateStore::DecisionScaleFile(round))));
  }
  const MaskPattern pattern{aggregation_.pattern.n, aggregation_.pattern.m};
  const size_t max_chunk = static_cast<size_t>(config_.max_chunk_bytes);
  auto stream = std::make_shared<std::vector<v1::DecisionChunk>>();
  for (const auto& [name, shape] : masks->tensors()) {
    ASSIGN_OR_RETURN(PackedMask mask, masks->Mask(name));
    ASSIGN_OR_RETURN(EncodedPayload payload, EncodeMask(name, mask, pattern, max_chunk));
    RETURN_IF_ERROR(AppendDecisionPayload(round, payload, tensor_table_, stream.get()));
    auto scale = scales.find(name);
    if (scale != scales.end()) {
      ASSIGN_OR_RETURN(EncodedPayload values, EncodeFloat32(name, scale->second.shape, scale->second.values,
                                                            PayloadKind::kWeightScale, max_chunk));
      RETURN_IF_ERROR(AppendDecisionPayload(round, values, tensor_table_, stream.get()));
    }
  }
  return std::shared_ptr<const std::vector<v1::DecisionChunk>>(std::move(stream));
}

DecisionLookup FederationJob::StoredDecisions() const {
  // Which closed round decided each tensor; the files are opened once, when first needed.
  struct Cache {
    std::map<std::string, int> round_of;
    std::map<int, std::shared_ptr<const MaskSetFile>> masks;
    int scales_round = -1;
    std::map<std::string, FloatTensor> scales;  // of scales_round
  };
  auto cache = std::make_shared<Cache>();
  {
    absl::MutexLock lock(&mu_);
    for (const Round& r : rounds_) {
      if (r.phase != RoundPhase::kClosed) continue;
      for (const auto& [name, shape] : *r.tensors) cache->round_of[name] = r.index;
    }
  }
  return [this, cache](const std::string& name) -> absl::StatusOr<std::optional<TensorDecision>> {
    auto round = cache->round_of.find(name);
    if (round == cache->round_of.end()) return std::nullopt;
    const int index = round->second;
    std::shared_ptr<const MaskSetFile>& masks = cache->masks[index];
    if (masks == nullptr) {
      ASSIGN_OR_RETURN(masks, MaskSetFile::Open(store_.Path(StateStore::DecisionMaskFile(index))));
    }
    TensorDecision decision;
    decision.name = name;
    ASSIGN_OR_RETURN(decision.mask, masks->Mask(name));
    if (aggregation_.weight_scaling) {
      if (cache->scales_round != index) {
        ASSIGN_OR_RETURN(std::string bytes, store_.ReadBytes(StateStore::DecisionScaleFile(index)));
        ASSIGN_OR_RETURN(cache->scales, DecodeFloatSet(bytes, store_.Path(StateStore::DecisionScaleFile(index))));
        cache->scales_round = index;
      }
      auto scale = cache->scales.find(name);
      if (scale == cache->scales.end()) {
        return absl::DataLossError(absl::StrCat(store_.Path(StateStore::DecisionScaleFile(index)), " has no scales for ", name));
      }
      std::vector<float>& values = scale->second.values;
      ASSIGN_OR_RETURN(decision.scale, TorchCall("scales", [&] {
        return at::from_blob(values.data(), scale->second.shape, at::kFloat).clone();
      }));
    }
    return decision;
  };
}

// ---- the worker ----------------------------------------------------------------------------

void FederationJob::WorkerLoop() {
  RunResumeAction();
  while (true) {
    std::deque<CommitTask> tasks;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](FederationJob* j) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                 return j->stopping_ || !j->queue_.empty();
                               },
                               this),
                           absl::Milliseconds(100));
      if (stopping_) return;
      tasks.swap(queue_);
    }
    for (CommitTask& task : tasks) ProcessCommit(std::move(task));
    Tick();
  }
}

void FederationJob::RunResumeAction() {
  absl::Status s;
  int last = -1;
  {
    absl::MutexLock lock(&mu_);
    if (!rounds_.empty()) last = rounds_.back().index;
  }
  switch (resume_action_) {
    case ResumeAction::kNone:
      return;
    case ResumeAction::kCloseRound:
      spdlog::info("round {} was aggregating when the server stopped; aggregating it again", last);
      s = CloseRound(last);
      break;
    case ResumeAction::kOpenNextRound:
      s = OpenRound(last + 1);
      break;
    case ResumeAction::kWriteModel:
      spdlog::info("every round is decided; writing the pruned model");
      s = WriteModel();
      break;
  }
  resume_action_ = ResumeAction::kNone;
  if (!s.ok()) Fail(std::string(s.message()));
}

void FederationJob::ProcessCommit(CommitTask task) {
  const UploadTicket& t = task.ticket;
  const int64_t now = clock_();
  nlohmann::json round_json;
  std::optional<absl::StatusOr<v1::UploadAck>> immediate;
  {
    absl::MutexLock lock(&mu_);
    Round& r = rounds_[t.round];
    r.in_flight.erase(t.client);
    if (r.committed.count(t.client) != 0) {
      v1::UploadAck ack;
      ack.set_round(t.round);
      ack.set_duplicate(true);
      ack.set_clients_committed(static_cast<int32_t>(r.committed.size()));
      immediate = ack;
    } else if (state_ != JobState::kRunning || r.phase != RoundPhase::kOpen) {
      immediate = absl::FailedPreconditionError(absl::StrCat("round ", t.round, " closed before the upload completed"));
    } else if (now > r.deadline_ms) {
      immediate = absl::FailedPreconditionError(absl::StrCat("round ", t.round, " passed its deadline during the upload"));
    }
  }
  if (immediate.has_value()) {
    if (!immediate->ok()) {
      spdlog::warn("upload from {} for round {} refused: {}", t.client, t.round, std::string(immediate->status().message()));
    }
    task.done(*std::move(immediate));
    return;
  }
  // Durable first (upload file, then round.json: the commit point), then counted. Nothing
  // can refuse the masks after the commit point: they were validated against the round.
  const bool statistics = strategy_ == Strategy::kExact;
  const std::string upload_file =
      statistics ? StateStore::StatisticsFile(t.round, t.client) : StateStore::UploadFile(t.round, t.client);
  absl::StatusOr<std::string> sha = absl::InternalError("upload has no spool");
  if (statistics) {
    absl::Status written = store_.WriteBytes(upload_file, task.statistics);
    sha = written.ok() ? absl::StatusOr<std::string>(Sha256Hex(task.statistics)) : written;
  } else if (task.spool != nullptr) {
    absl::Status before = store_.BeforeWrite(upload_file);
    sha = before.ok() ? task.spool->Commit(StateStore::TornWritePoint(upload_file)) : before;
  }
  task.spool.reset();
  absl::Status s = sha.status();
  nlohmann::json record = {{"client", t.client},
                           {"committed_unix_ms", now},
                           {"tensors", task.stats.tensors},
                           {"weights", task.stats.weights},
                           {"wire_bytes", task.stats.wire_bytes},
                           {"payload_bytes", task.stats.payload_bytes},
                           {"upload_seconds", task.stats.seconds},
                           {"bits_per_weight", 8.0 * task.stats.wire_bytes / std::max<int64_t>(1, task.stats.weights)},
                           {statistics ? "statistics_sha256" : "masks_sha256", sha.ok() ? *sha : std::string()}};
  if (!task.contributors.empty()) record["contributors"] = task.contributors;
  if (s.ok()) {
    CrashPoint("commit-point");
    absl::MutexLock lock(&mu_);
    Round copy = rounds_[t.round];
    copy.commits.push_back(record);
    round_json = RoundRecordJson(copy);
  }
  if (s.ok()) s = store_.WriteJson(StateStore::RoundFile(t.round), round_json);
  if (!s.ok()) {
    spdlog::error("commit of {} for round {} failed: {}", t.client, t.round, std::string(s.message()));
    task.done(absl::InternalError(absl::StrCat("could not persist the upload: ", s.message())));
    return;
  }
  CrashPoint("committed");
  absl::Status added;
  if (statistics) {
    added = CountStatistics(t.round, t.client, task.statistics);
  } else {
    // The votes are read back from the file when the round closes.
    absl::StatusOr<std::shared_ptr<const MaskSetFile>> upload =
        OpenCommittedUpload(store_, t.round, record, /*check_sha256=*/false);
    added = upload.ok() ? CountUpload(t.client, *std::move(upload)) : upload.status();
  }
  if (!added.ok()) {
    task.done(absl::InternalError(absl::StrCat("committed upload could not be counted: ", added.message())));
    Fail(absl::StrCat("internal error counting the votes of ", t.client, ": ", added.message()));
    return;
  }
  v1::UploadAck ack;
  bool close = false;
  {
    absl::MutexLock lock(&mu_);
    Round& r = rounds_[t.round];
    r.committed.insert(t.client);
    r.commits.push_back(record);
    SiteTraffic& traffic = traffic_[t.client];
    traffic.bytes += task.stats.wire_bytes;
    traffic.commit_round = t.round;
    traffic.commit_seconds = (now - r.opened_ms) / 1000.0;
    if (sites_.allowed(t.client)) sites_.SetActivity(t.client, v1::SITE_ACTIVITY_WAITING, t.round);  // not the secure sum
    close = RoundCanCloseLocked(r);
    ack.set_round(t.round);
    ack.set_committed(true);
    ack.set_tensors_received(task.stats.tensors);
    ack.set_bytes_received(task.stats.wire_bytes);
    ack.set_clients_committed(static_cast<int32_t>(r.committed.size()));
  }
  spdlog::info("round {}: committed upload of {} ({} tensors, {} wire bytes = {:.4f} bits/weight, {:.2f} s); "
               "{} of {} clients committed",
               t.round, t.client, task.stats.tensors, task.stats.wire_bytes,
               8.0 * task.stats.wire_bytes / std::max<int64_t>(1, task.stats.weights), task.stats.seconds,
               ack.clients_committed(), config_.expected_clients);
  task.done(ack);
  if (events_.upload_committed) events_.upload_committed(t.client, task.stats, (clock_() - now) / 1000.0);
  if (close) {
    if (absl::Status c = CloseRound(t.round); !c.ok()) Fail(absl::StrCat("round ", t.round, ": ", c.message()));
  }
}

bool FederationJob::RoundCanCloseLocked(const Round& r) const {
  if (r.phase != RoundPhase::kOpen) return false;
  // A secure round has one commit, the decoded sum of every surviving site.
  if (config_.secure_aggregation) return r.committed.count(kSecureSumSite) != 0;
  const int committed = static_cast<int>(r.committed.size());
  if (committed >= config_.expected_clients) return true;
  if (committed < config_.min_clients) return false;
  // Every live participant has committed: waiting longer cannot add a vote.
  for (const std::string& site : sites_.LiveParticipants()) {
    if (r.committed.count(site) == 0) return false;
  }
  return true;
}

std::string FederationJob::MissingSitesLocked(const Round* round) const {
  std::vector<std::string> missing;
  for (const std::string& name : config_.allowed_clients) {
    const SiteRegistry::Site& site = sites_.site(name);
    if (round != nullptr && (!site.participant || round->committed.count(name) != 0)) continue;
    if (round == nullptr && site.participant && !site.lost) continue;
    missing.push_back(absl::StrCat(name, " (",
                                   !site.participant ? "never joined"
                                   : site.lost       ? "lost"
                                                     : SiteRegistry::DescribeActivity(site),
                                   ")"));
  }
  return missing.empty() ? "none" : absl::StrJoin(missing, ", ");
}

void FederationJob::LogWaitingLocked(int64_t now_ms) {
  if (now_ms - last_waiting_log_ms_ < 30'000) return;
  last_waiting_log_ms_ = now_ms;
  if (state_ == JobState::kWaitingForClients) {
    spdlog::info("waiting for sites to join: {} (joined: {})", MissingSitesLocked(nullptr),
                 absl::StrJoin(sites_.LiveParticipants(), ", "));
  } else if (state_ == JobState::kRunning && rounds_.back().phase == RoundPhase::kOpen) {
    const Round& r = rounds_.back();
    spdlog::info("round {}: waiting for {} (committed: {}; deadline in {} s)", r.index, MissingSitesLocked(&r),
                 r.committed.empty() ? "none" : absl::StrJoin(r.committed, ", "), (r.deadline_ms - now_ms) / 1000);
  }
}

void FederationJob::CheckLiveness(int64_t now_ms) {
  for (const auto& [site, why] : sites_.DeclareLost(now_ms)) {
    spdlog::warn("site {} lost: {}; its session ended (it may join again)", site, why);
  }
}

void FederationJob::Tick() {
  const int64_t now = clock_();
  enum class Action { kNone, kOpenFirst, kClose, kFail } action = Action::kNone;
  int round = -1;
  std::string reason;
  std::vector<Reply> replies;
  {
    absl::MutexLock lock(&mu_);
    if (!abort_reason_.empty() && state_ != JobState::kDone && state_ != JobState::kFailed) {
      action = Action::kFail;
      reason = abort_reason_;
    }
  }
  if (action == Action::kFail) {
    Fail(reason);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    replies = CollectRepliesLocked(now);
    if (state_ == JobState::kWaitingForClients || state_ == JobState::kRunning) {
      CheckLiveness(now);  // after the end nothing waits for a site any more
      LogWaitingLocked(now);
      if (config_.secure_aggregation && state_ == JobState::kRunning) {
        // A lost site no longer holds up a step of the secure sum.
        if (std::string why = AdvanceSecureSumLocked(); !why.empty() && abort_reason_.empty()) abort_reason_ = why;
      }
    }
    if (state_ == JobState::kWaitingForClients) {
      const int live = static_cast<int>(sites_.LiveParticipants().size());
      const bool timed_out = now - join_phase_started_ms_ >= int64_t{1000} * config_.join_timeout_seconds;
      // Sites that declined will not come: wait only for those that still may.
      const int may_come = static_cast<int>(config_.allowed_clients.size() - declined_.size());
      const int expected = std::min(config_.expected_clients, may_come);
      if (may_come < config_.min_clients) {
        std::string why;
        for (const auto& [site, text] : declined_) absl::StrAppend(&why, why.empty() ? "" : "; ", site, ": ", text);
        action = Action::kFail;
        reason = absl::StrCat("join phase: ", declined_.size(), " sites declined the job, so at most ", may_come,
                              " of min_clients ", config_.min_clients, " can join (", why, ")");
      } else if (live >= expected && live >= config_.min_clients || (timed_out && live >= config_.min_clients)) {
        action = Action::kOpenFirst;
        phases_["waiting_for_clients_seconds"] = (now - join_phase_started_ms_) / 1000.0;
        spdlog::info("{} of {} expected clients joined; starting", live, config_.expected_clients);
      } else if (timed_out) {
        action = Action::kFail;
        reason = absl::StrCat("join phase: only ", live, " of min_clients ", config_.min_clients,
                              " sites joined within join_timeout_seconds (", config_.join_timeout_seconds,
                              "); missing: ", MissingSitesLocked(nullptr));
      }
    } else if (state_ == JobState::kRunning && !rounds_.empty()) {
      Round& r = rounds_.back();
      if (r.phase == RoundPhase::kOpen && RoundCanCloseLocked(r)) {
        round = r.index;
        action = Action::kClose;
        if (static_cast<int>(r.committed.size()) < config_.expected_clients) {
          spdlog::info("round {}: every live site has committed ({} of {} expected, min {}); closing; missing: {}",
                       r.index, r.committed.size(), config_.expected_clients, config_.min_clients,
                       MissingSitesLocked(&r));
        }
      } else if (r.phase == RoundPhase::kOpen && now > r.deadline_ms) {
        round = r.index;
        if (static_cast<int>(r.committed.size()) >= config_.min_clients) {
          action = Action::kClose;
          spdlog::info("round {}: deadline reached with {} of {} clients committed (min {}); closing; missing: {}",
                       r.index, r.committed.size(), config_.expected_clients, config_.min_clients,
                       MissingSitesLocked(&r));
        } else if (r.extensions < config_.max_round_extensions) {
          ++r.extensions;
          r.deadline_ms += int64_t{1000} * config_.round_deadline_seconds;
          spdlog::warn("round {}: deadline reached with {} of min {} clients committed; extension {} of {}; "
                       "missing: {}",
                       r.index, r.committed.size(), config_.min_clients, r.extensions, config_.max_round_extensions,
                       MissingSitesLocked(&r));
          (void)store_.WriteJson(StateStore::RoundFile(r.index), RoundRecordJson(r));
          (void)PersistJobLocked();
        } else {
          action = Action::kFail;
          reason = absl::StrCat("round ", r.index, ": only ", r.committed.size(), " of min_clients ",
                                config_.min_clients, " committed after ", r.extensions,
                                " deadline extensions; missing: ", MissingSitesLocked(&r));
        }
      }
    }
  }
  Deliver(std::move(replies));
  absl::Status s;
  if (action == Action::kOpenFirst) s = OpenRound(0);
  if (action == Action::kClose) s = CloseRound(round);
  if (action == Action::kFail) {
    Fail(reason);
    return;
  }
  if (!s.ok()) Fail(std::string(s.message()));
}

std::vector<FederationJob::Reply> FederationJob::CollectRepliesLocked(int64_t now_ms) {
  std::vector<Reply> replies;
  std::vector<Waiter> keep;
  const int64_t now = clock_();
  for (Waiter& w : waiters_) {
    if (auto answer = AnswerLocked(w.client, w.last_completed_round)) {
      sites_.PollEnded(w.client, now);
      replies.emplace_back(std::move(w.done), *std::move(answer));
    } else if (now_ms >= w.expires_ms) {
      sites_.PollEnded(w.client, now);
      v1::RoundAssignment a;
      a.set_state(v1::ROUND_STATE_NOT_READY);
      replies.emplace_back(std::move(w.done), a);
    } else {
      keep.push_back(std::move(w));
    }
  }
  waiters_ = std::move(keep);
  return replies;
}

FederationJob::Round FederationJob::NewRound(int index) const {
  Round r;
  r.index = index;
  r.layers = LayersOfRound(index);
  auto tensors = std::make_shared<std::map<std::string, std::vector<int64_t>>>();
  for (const v1::TensorSpec& t : job_spec_.tensors()) {
    if (std::find(r.layers.begin(), r.layers.end(), t.layer()) == r.layers.end()) continue;
    std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    r.weights += NumElements(shape);
    tensors->emplace(t.name(), std::move(shape));
  }
  r.tensors = std::move(tensors);
  r.opened_ms = clock_();
  r.deadline_ms = r.opened_ms + int64_t{1000} * config_.round_deadline_seconds;
  return r;
}

absl::Status FederationJob::OpenRound(int index) {
  Round r = NewRound(index);
  RETURN_IF_ERROR(pruner_.OpenRound(index, std::vector<int64_t>(r.layers.begin(), r.layers.end()),
                                    static_cast<int>(config_.allowed_clients.size())));
  const size_t num_tensors = r.tensors->size();
  const int64_t weights = r.weights;
  RETURN_IF_ERROR(store_.WriteJson(StateStore::RoundFile(index), RoundRecordJson(r)));
  std::vector<Reply> replies;
  {
    absl::MutexLock lock(&mu_);
    if (first_round_opened_ms_ == 0) first_round_opened_ms_ = r.opened_ms;
    rounds_.push_back(std::move(r));
    state_ = JobState::kRunning;
    last_waiting_log_ms_ = clock_();
    RETURN_IF_ERROR(PersistJobLocked());
    replies = CollectRepliesLocked(0);
  }
  spdlog::info("round {} opened: layers [{}], {} tensors, {} weights per client, deadline in {} s", index,
               absl::StrJoin(LayersOfRound(index), ","), num_tensors, weights, config_.round_deadline_seconds);
  Deliver(std::move(replies));
  CrashPoint("round-opened");
  return absl::OkStatus();
}

absl::StatusOr<FederationJob::Decided> FederationJob::Decide(int index, bool publish) {
  const auto start = std::chrono::steady_clock::now();
  const std::string mask_file = StateStore::DecisionMaskFile(index);
  ASSIGN_OR_RETURN(MaskSetWriter masks, store_.NewMaskSet(mask_file, static_cast<uint32_t>(pruner_.ExpectedTensors().size()),
                                                          publish ? "decide" : "replay"));
  std::map<std::string, FloatTensor> scales;
  Decided out;
  const DecisionSink sink = [&](TensorDecision d) -> absl::Status {
    RETURN_IF_ERROR(masks.Add(d.name, d.mask));
    std::pair<int64_t, int64_t>& counts = out.per_layer[LayerOfTensor(d.name)];
    counts.first += d.mask.CountOnes();
    counts.second += d.mask.numel();
    if (d.scale.defined()) {
      ASSIGN_OR_RETURN(scales[d.name], ScaleValues(d.name, d.scale));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(strategy_ == Strategy::kExact ? CloseExactRoundInto(index, sink) : pruner_.CloseRoundInto(sink));
  if (!publish) {
    ASSIGN_OR_RETURN(out.masks_sha256, masks.Discard());
  } else {
    RETURN_IF_ERROR(store_.BeforeWrite(mask_file));
    ASSIGN_OR_RETURN(out.masks_sha256, masks.Commit(StateStore::TornWritePoint(mask_file)));
    if (!scales.empty()) {
      RETURN_IF_ERROR(store_.WriteBytes(StateStore::DecisionScaleFile(index), EncodeFloatSet(scales)));
    }
  }
  out.seconds = SecondsSince(start);
  return out;
}

absl::Status FederationJob::CloseRound(int index) {
  std::vector<std::string> clients;
  nlohmann::json round_json;
  {
    absl::MutexLock lock(&mu_);
    rounds_[index].phase = RoundPhase::kAggregating;
    clients.assign(rounds_[index].committed.begin(), rounds_[index].committed.end());
    round_json = RoundRecordJson(rounds_[index]);
  }
  // Persisted before aggregating: the set of counted votes is frozen, so a restart
  // aggregates exactly these uploads again and accepts no others.
  RETURN_IF_ERROR(store_.WriteJson(StateStore::RoundFile(index), round_json));
  spdlog::info("round {} closed for uploads: {} clients [{}]; aggregating", index, clients.size(),
               absl::StrJoin(clients, ", "));
  CrashPoint("aggregating");
  ASSIGN_OR_RETURN(Decided decided, Decide(index, /*publish=*/true));
  CrashPoint("decision-written");
  for (const auto& [layer, counts] : decided.per_layer) {
    spdlog::info("round {}: layer {} aggregated from {} clients: {} of {} weights pruned ({:.4f})", index, layer,
                 clients.size(), counts.first, counts.second, static_cast<double>(counts.first) / counts.second);
  }
  if (strategy_ != Strategy::kExact) LogStandings(index);  // exact rounds count no masks
  {
    absl::MutexLock lock(&mu_);
    Round& r = rounds_[index];
    r.phase = RoundPhase::kClosed;
    r.closed_ms = clock_();
    r.aggregation_seconds = decided.seconds;
    round_json = RoundRecordJson(r);
  }
  RETURN_IF_ERROR(store_.WriteJson(StateStore::RoundFile(index), round_json));
  spdlog::info("round {} decided in {:.3f} s; decision {} (sha256 {})", index, decided.seconds,
               StateStore::DecisionMaskFile(index), decided.masks_sha256.substr(0, 16));
  if (events_.round_closed) events_.round_closed(index, decided.seconds);
  CrashPoint("round-closed");
  if (index + 1 < NumRounds()) return OpenRound(index + 1);
  return WriteModel();
}

void FederationJob::LogStandings(int index) const {
  const std::vector<SiteStanding>& standings = pruner_.last_standings();
  const OutlierVerdict& v = pruner_.last_verdict();
  const OutlierOptions& rule = pruner_.outlier_options();
  std::string list;
  for (const SiteStanding& s : standings) {
    absl::StrAppend(&list, list.empty() ? "" : ", ", s.site, " ", absl::StrFormat("%.4f", s.against_final.agreement()),
                    " (distance ", absl::StrFormat("%.4f", s.against_final.distance()), ")");
  }
  spdlog::info("round {}: agreement of each site's pruned weights with the decision: {}; {}", index, list,
               v.applied ? absl::StrFormat("outlier rule (outlier_policy %s, against the decision of all %d sites): "
                                           "median %.4f, MAD %.4f, cut-off %.4f",
                                           OutlierPolicyName(rule.policy), static_cast<int>(standings.size()),
                                           v.median, v.mad, v.cutoff)
                         : absl::StrFormat("no outlier rule with %d sites (outlier_min_sites %d)",
                                           static_cast<int>(standings.size()), rule.min_sites));
  for (const SiteStanding& s : standings) {
    if (!s.outlier) continue;
    spdlog::warn("round {}: site {} is an outlier: its agreement with the decision of all sites, {:.4f}, is far "
                 "below the other sites' (median {:.4f}, robust z {} < -{}, gap above outlier_min_gap {}); {}",
                 index, s.site, s.judged_agreement, v.median,
                 std::isfinite(s.z) ? absl::StrFormat("%.2f", s.z) : std::string("-inf (MAD 0)"), rule.z_threshold,
                 rule.min_gap,
                 s.excluded ? "its votes were NOT counted (outlier_policy exclude)"
                            : "its votes were counted (outlier_policy report)");
  }
}

absl::Status FederationJob::WriteModel() {
  {
    absl::MutexLock lock(&mu_);
    state_ = JobState::kWritingModel;
    RETURN_IF_ERROR(PersistJobLocked());
  }
  const auto start = std::chrono::steady_clock::now();
  // Written beside its final place, then renamed: output_dir/model is always either absent
  // or a complete checkpoint.
  const std::filesystem::path model_dir = std::filesystem::path(config_.output_dir) / "model";
  const std::filesystem::path partial = std::filesystem::path(config_.output_dir) / "model.partial";
  RETURN_IF_ERROR(store_.BeforeWrite("output/model"));
  std::error_code ec;
  std::filesystem::remove_all(partial, ec);
  RETURN_IF_ERROR(pruner_.SavePrunedHf(partial.string(), tokenizer_path_, StoredDecisions(),
                                       {{"tool", "fedprllm-server"},
                                        {"job", job_id_},
                                        {"job_name", config_.job_name},
                                        {"strategy", config_.strategy},
                                        {"rounds", absl::StrCat(NumRounds())}}));
  CrashPoint("model-partial");
  std::filesystem::remove_all(model_dir, ec);
  std::filesystem::rename(partial, model_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", partial.string(), " to ", model_dir.string(), ": ", ec.message()));
  }
  const double write_seconds = SecondsSince(start);
  spdlog::info("pruned model written to {} ({}, {:.2f} s)", model_dir.string(),
               TorchDtypeName(pruner_.base_model().config().dtype), write_seconds);
  CrashPoint("model-written");
  {
    absl::MutexLock lock(&mu_);
    phases_["writing_model_seconds"] = write_seconds;
  }
  RETURN_IF_ERROR(WriteReport("DONE"));
  CrashPoint("report-written");
  std::vector<Reply> replies;
  {
    absl::MutexLock lock(&mu_);
    state_ = JobState::kDone;
    if (absl::Status s = PersistJobLocked(); !s.ok()) {
      state_ = JobState::kWritingModel;  // not DONE until it is durable
      return s;
    }
    replies = CollectRepliesLocked(0);
  }
  spdlog::info("job {} done", job_id_);
  Deliver(std::move(replies));
  return absl::OkStatus();
}

absl::Status FederationJob::WriteReport(const std::string& state) {
  nlohmann::json report;
  {
    absl::MutexLock lock(&mu_);
    report = BuildReport();
    report["state"] = state;
  }
  const std::string report_path = (std::filesystem::path(config_.output_dir) / "report.json").string();
  RETURN_IF_ERROR(store_.BeforeWrite("output/report.json"));
  RETURN_IF_ERROR(AtomicWriteFile(report_path, report.dump(2) + "\n"));
  spdlog::info("report written to {}", report_path);
  return absl::OkStatus();
}

void FederationJob::Fail(const std::string& reason) {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == JobState::kFailed || state_ == JobState::kDone || !failure_.empty()) return;
    failure_ = reason;  // from here on the report carries the failure
  }
  spdlog::error("job {} FAILED: {}", job_id_, reason);
  // The report first, so that whoever learns of the failure finds it written.
  if (absl::Status s = WriteReport("FAILED"); !s.ok()) {
    spdlog::error("cannot write the report of the failed job: {}", std::string(s.message()));
  }
  std::vector<Reply> replies;
  {
    absl::MutexLock lock(&mu_);
    state_ = JobState::kFailed;
    (void)PersistJobLocked();
    replies = CollectRepliesLocked(0);
  }
  Deliver(std::move(replies));
}

absl::Status FederationJob::PersistJobLocked() {
  static const char* kStates[] = {"WAITING_FOR_CLIENTS", "RUNNING", "WRITING_MODEL", "DONE", "FAILED"};
  nlohmann::json job = {{"state", kStates[static_cast<int>(state_)]},
                        {"current_round", rounds_.empty() ? -1 : rounds_.back().index},
                        {"deadline_unix_ms", rounds_.empty() ? 0 : rounds_.back().deadline_ms},
                        {"extensions", rounds_.empty() ? 0 : rounds_.back().extensions},
                        {"participants", sites_.Participants()},
                        {"phases", phases_},
                        {"failure", failure_}};
  // Small and rare (state changes and first joins only), so written under the lock; the
  // commit path writes its large files without it.
  return store_.WriteJson("job.json", job);
}

nlohmann::json FederationJob::BuildReport() {
  nlohmann::json rounds = nlohmann::json::array();
  std::map<std::string, std::pair<int64_t, int64_t>> per_client;  // wire bytes, weights
  double rounds_seconds = 0, aggregation_seconds = 0;
  for (const Round& r : rounds_) {
    nlohmann::json uploads = nlohmann::json::object();
    for (const nlohmann::json& c : r.commits) {
      uploads[c["client"].get<std::string>()] = c;
      per_client[c["client"]].first += c["wire_bytes"].get<int64_t>();
      per_client[c["client"]].second += c["weights"].get<int64_t>();
    }
    const double seconds = r.closed_ms > 0 ? (r.closed_ms - r.opened_ms) / 1000.0 : 0.0;
    rounds.push_back({{"round", r.index},
                      {"layers", r.layers},
                      {"state", RoundPhaseName(r.phase)},
                      {"clients", std::vector<std::string>(r.committed.begin(), r.committed.end())},
                      {"weights_per_client", r.weights},
                      {"opened_unix_ms", r.opened_ms},
                      {"closed_unix_ms", r.closed_ms},
                      {"round_seconds", seconds},
                      {"aggregation_seconds", r.aggregation_seconds},
                      {"deadline_extensions", r.extensions},
                      {"uploads", uploads}});
    rounds_seconds += seconds;
    aggregation_seconds += r.aggregation_seconds;
  }
  nlohmann::json bytes = nlohmann::json::object();
  for (const auto& [client, v] : per_client) {
    bytes[client] = {{"wire_bytes", v.first},
                     {"weights", v.second},
                     {"bits_per_weight", 8.0 * v.first / std::max<int64_t>(1, v.second)}};
  }
  nlohmann::json phases = phases_;
  phases["rounds_seconds"] = rounds_seconds;
  phases["aggregation_seconds"] = aggregation_seconds;
  const nlohmann::json& pruner = pruner_.report();  // worker thread only: safe here
  nlohmann::json report = {
      {"job_id", job_id_},
      {"model", config_.model},
      {"model_fingerprint", fingerprint_},
      {"output_model", (std::filesystem::path(config_.output_dir) / "model").string()},
      {"config", ConfigDigestJson(config_)},
      {"robustness",
       {{"site_group", config_.site_group},
        {"outlier_policy", config_.outlier_policy},
        {"outlier_z_threshold", config_.outlier_z_threshold},
        {"outlier_min_gap", config_.outlier_min_gap},
        {"outlier_min_sites", config_.outlier_min_sites}}},
      {"joined_clients", sites_.Participants()},
      {"sites", sites_.StatusJson(clock_())},
      {"rounds", rounds},
      {"bytes_per_client", bytes},
      {"phases_seconds", phases},
      {"matrices", pruner.contains("tensors") ? pruner["tensors"] : nlohmann::json::object()},
      {"aggregation_rounds", pruner.contains("rounds") ? pruner["rounds"] : nlohmann::json::array()}};
  if (!failure_.empty()) {
    report["failure"] = failure_;
    report["missing_sites"] =
        rounds_.empty() || rounds_.back().phase != RoundPhase::kOpen ? MissingSitesLocked(nullptr)
                                                                      : MissingSitesLocked(&rounds_.back());
  }
  return report;
}

}  // namespace fedprllm
