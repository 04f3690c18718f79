// The jobs room: the job list and its persistence, the runner that takes one job at a time
// from load to outcome, and the sites' WaitForJob long polls.
#include "server/job_queue.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "config/yaml_config.h"
#include "model/cpu_runtime.h"
#include "model/tokenizer.h"
#include "server/state_store.h"
#include "tls/revocation_list.h"

namespace fedprllm {
namespace {

const char* StateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED: return "queued";
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_DONE: return "done";
    case v1::JOB_STATE_FAILED: return "failed";
    case v1::JOB_STATE_ABORTED: return "aborted";
    default: return "unknown";
  }
}

v1::JobState ParseStateName(const std::string& name) {
  for (v1::JobState s : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_DONE, v1::JOB_STATE_FAILED,
                         v1::JOB_STATE_ABORTED}) {
    if (name == StateName(s)) return s;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

bool HasEnded(v1::JobState state) {
  return state == v1::JOB_STATE_DONE || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_ABORTED;
}

}  // namespace

JobQueue::JobQueue(ServerConfig server, ServerMetrics* metrics, JobLogSink* log, ClockMs clock)
    : server_(std::move(server)), metrics_(metrics), log_(log), clock_(std::move(clock)) {
  ticker_ = std::thread([this] { TickerLoop(); });
}

JobQueue::~JobQueue() {
  {
    absl::MutexLock lock(&mu_);
    stop_ticker_ = true;
  }
  ticker_.join();
  std::vector<Reply> replies;
  {
    absl::MutexLock lock(&mu_);
    for (OfferWaiter& w : offer_waiters_) {
      replies.emplace_back(std::move(w.done), absl::UnavailableError("server is shutting down"));
    }
    offer_waiters_.clear();
  }
  for (auto& [done, result] : replies) done(std::move(result));
}

absl::Status JobQueue::Load() {
  absl::MutexLock lock(&mu_);
  if (server_.has_own_job()) RETURN_IF_ERROR(AddLocked(OwnJob(server_), /*own=*/true, /*persist=*/false));
  if (!server_.jobs_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(server_.jobs_dir, ec);
    if (ec) return ConfigKeyError("jobs_dir", absl::StrCat("cannot create ", server_.jobs_dir, ": ", ec.message()));
    // Every job this server knew, in submission order.
    std::vector<std::pair<int, nlohmann::json>> known;
    for (const auto& dir : std::filesystem::directory_iterator(server_.jobs_dir, ec)) {
      const std::filesystem::path status_path = dir.path() / "status.json";
      std::ifstream in(status_path);
      if (!in) continue;
      nlohmann::json status = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (status.is_discarded() || !status.contains("seq")) {
        spdlog::warn("{}: not a job status file; the job is skipped", status_path.string());
        continue;
      }
      known.emplace_back(status.value("seq", 0), std::move(status));
    }
    std::sort(known.begin(), known.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [seq, status] : known) {
      entries_.push_back(EntryFromStatus(status));
      (void)PersistLocked(*entries_.back());
    }
  }
  for (const std::string& path : server_.jobs) {
    ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
    absl::StatusOr<JobDefinition> definition = ParseJobYaml(text, path, server_);
    if (!definition.ok()) {
      return absl::Status(definition.status().code(),
                          absl::StrCat("config key 'jobs': ", definition.status().message()));
    }
    if (const Entry* known = FindLocked(definition->name)) {
      spdlog::info("job {} from {} is known already ({})", definition->name, path, StateName(known->summary.state()));
      continue;
    }
    RETURN_IF_ERROR(AddLocked(*std::move(definition), /*own=*/false, /*persist=*/true));
  }
  UpdateJobCountsLocked();
  return absl::OkStatus();
}

std::unique_ptr<JobQueue::Entry> JobQueue::EntryFromStatus(const nlohmann::json& status) const {
  const std::string name = status.value("name", "");
  const std::string dir = absl::StrCat(server_.jobs_dir, "/", name);
  auto entry = std::make_unique<Entry>();
  entry->seq = status.value("seq", 0);
  entry->dir = dir;
  entry->log_path = dir + "/server.log";
  v1::JobSummary& s = entry->summary;
  s.set_name(name);
  s.set_job_id(status.value("job_id", ""));
  s.set_state(ParseStateName(status.value("state", "")));
  s.set_reason(status.value("reason", ""));
  s.set_submitted_unix_ms(status.value("submitted_unix_ms", int64_t{0}));
  s.set_started_unix_ms(status.value("started_unix_ms", int64_t{0}));
  s.set_finished_unix_ms(status.value("finished_unix_ms", int64_t{0}));
  s.set_rounds_closed(status.value("rounds_closed", 0));
  s.set_rounds_total(status.value("rounds_total", 0));
  // The YAML as submitted, read with today's server config.
  absl::StatusOr<std::string> text = ReadConfigFile(dir + "/job.yaml");
  absl::StatusOr<JobDefinition> definition =
      text.ok() ? ParseJobYaml(*text, dir + "/job.yaml", server_) : absl::StatusOr<JobDefinition>(text.status());
  if (definition.ok()) {
    entry->definition = *std::move(definition);
  } else {
    entry->definition.name = name;
    if (!HasEnded(s.state())) {
      s.set_state(v1::JOB_STATE_FAILED);
      s.set_reason(absl::StrCat("cannot be resumed: ", definition.status().message()));
    }
  }
  if (!HasEnded(s.state())) {
    s.set_state(v1::JOB_STATE_QUEUED);  // a RUNNING one resumes from its state directory
    spdlog::info("job {} was not finished when the server stopped; queued to resume", name);
  }
  return entry;
}

absl::Status JobQueue::AddLocked(JobDefinition definition, bool own, bool persist) {
  if (FindLocked(definition.name) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("a job named ", definition.name, " exists already on this server"));
  }
  auto entry = std::make_unique<Entry>();
  entry->seq = entries_.empty() ? 1 : entries_.back()->seq + 1;
  entry->own = own;
  if (!own) {
    entry->dir = absl::StrCat(server_.jobs_dir, "/", definition.name);
    entry->log_path = entry->dir + "/server.log";
  } else {
    entry->log_path = definition.config.output_dir + "/server.log";
  }
  v1::JobSummary& s = entry->summary;
  s.set_name(definition.name);
  s.set_state(v1::JOB_STATE_QUEUED);
  s.set_submitted_unix_ms(clock_());
  entry->definition = std::move(definition);
  if (persist) {
    std::error_code ec;
    std::filesystem::create_directories(entry->dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", entry->dir, ": ", ec.message()));
    RETURN_IF_ERROR(AtomicWriteFile(entry->dir + "/job.yaml", entry->definition.yaml_text));
    RETURN_IF_ERROR(PersistLocked(*entry));
  }
  entries_.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status JobQueue::PersistLocked(const Entry& entry) const {
  if (entry.own) return absl::OkStatus();  // its state directory is its record
  const v1::JobSummary& s = entry.summary;
  const nlohmann::json status = {{"seq", entry.seq},
                                 {"name", s.name()},
                                 {"job_id", s.job_id()},
                                 {"state", StateName(s.state())},
                                 {"reason", s.reason()},
                                 {"submitted_unix_ms", s.submitted_unix_ms()},
                                 {"started_unix_ms", s.started_unix_ms()},
                                 {"finished_unix_ms", s.finished_unix_ms()},
                                 {"rounds_closed", s.rounds_closed()},
                                 {"rounds_total", s.rounds_total()}};
  absl::Status written = AtomicWriteFile(entry.dir + "/status.json", status.dump(2) + "\n");
  if (!written.ok()) spdlog::error("cannot record the status of job {}: {}", s.name(), std::string(written.message()));
  return written;
}

const JobQueue::Entry* JobQueue::FindLocked(const std::string& name) const {
  for (const auto& e : entries_) {
    if (e->summary.name() == name) return e.get();
  }
  return nullptr;
}

JobQueue::Entry* JobQueue::FindLocked(const std::string& name) {
  return const_cast<Entry*>(static_cast<const JobQueue*>(this)->FindLocked(name));
}

v1::JobSummary JobQueue::SummaryLocked(const Entry& entry) const {
  v1::JobSummary s = entry.summary;
  const ServerConfig& c = entry.definition.config;
  s.set_model_name(c.model_name);
  s.set_strategy(c.strategy);
  s.clear_sites();
  for (const std::string& site : c.allowed_clients) s.add_sites(site);
  s.set_output_dir(c.output_dir);
  if (&entry == running_entry_ && running_ != nullptr) {
    s.set_rounds_closed(running_->RoundsClosed());
    s.set_rounds_total(running_->NumRounds());
  }
  return s;
}

void JobQueue::UpdateJobCountsLocked() const {
  if (metrics_ == nullptr) return;
  std::map<std::string, int> counts = {{"queued", 0}, {"running", 0}, {"done", 0}, {"failed", 0}, {"aborted", 0}};
  for (const auto& e : entries_) ++counts[StateName(e->summary.state())];
  metrics_->SetJobCounts(counts);
}

absl::Status JobQueue::Run() {
  absl::Status first_failure;
  while (true) {
    Entry* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        if (!shutdown_.empty()) return true;
        for (const auto& e : entries_) {
          if (e->summary.state() == v1::JOB_STATE_QUEUED) return true;
        }
        return server_.exit_when_idle;
      };
      mu_.Await(absl::Condition(&ready));
      if (!shutdown_.empty()) return absl::OkStatus();
      for (const auto& e : entries_) {
        if (e->summary.state() == v1::JOB_STATE_QUEUED) {
          next = e.get();
          break;
        }
      }
      if (next == nullptr) {
        spdlog::info("no job queued or running: exiting (exit_when_idle)");
        return first_failure;
      }
      next->summary.set_state(v1::JOB_STATE_RUNNING);
      next->summary.set_started_unix_ms(clock_());
      running_entry_ = next;
      (void)PersistLocked(*next);
      UpdateJobCountsLocked();
    }
    absl::Status result = RunOne(next);
    if (absl::IsCancelled(result)) return absl::OkStatus();
    if (!result.ok() && first_failure.ok()) first_failure = result;
  }
}

absl::Status JobQueue::RunOne(Entry* entry) {
  const JobDefinition& definition = entry->definition;
  const ServerConfig& config = definition.config;
  if (log_ != nullptr) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(entry->log_path).parent_path(), ec);
    log_->Attach(entry->log_path);
  }
  spdlog::info("job {} starting: model {} ({}), {} strategy, sparsity {} {}, sites [{}]", definition.name,
               config.model_name, config.model, config.strategy, config.sparsity, config.pattern,
               absl::StrJoin(config.allowed_clients, ", "));
  auto end = [&](v1::JobState state, const absl::Status& status) {
    spdlog::info("job {} ended: {}", definition.name, v1::JobState_Name(state));
    if (log_ != nullptr) log_->Detach();
    if (metrics_ != nullptr) metrics_->RemoveJob(definition.name);
    Ended(entry, state, std::string(status.message()));
    return status;
  };

  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<LlamaModel> model = LlamaModel::Load(config.model);
  if (!model.ok()) {
    spdlog::error("job {}: cannot load model {}: {}", definition.name, config.model, std::string(model.status().message()));
    return end(v1::JOB_STATE_FAILED, absl::Status(model.status().code(), absl::StrCat("job ", definition.name,
                                                                                      ": model: ", model.status().message())));
  }
  FitBlasThreadsToModel(model->config().hidden_size);
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::string tokenizer = config.tokenizer;
  if (tokenizer.empty()) {
    if (auto found = FindTokenizer(config.model, ""); found.ok()) tokenizer = *found;
  } else if (!std::filesystem::exists(tokenizer)) {
    return end(v1::JOB_STATE_FAILED,
               absl::NotFoundError(absl::StrCat("job ", definition.name, ": tokenizer ", tokenizer, " does not exist")));
  }
  spdlog::info("model {} loaded in {:.2f} s: {} decoder layers, {}; tokenizer {}", config.model, load_seconds,
               model->config().num_hidden_layers, TorchDtypeName(model->config().dtype),
               tokenizer.empty() ? "(none)" : tokenizer);
  absl::StatusOr<std::unique_ptr<FederationJob>> created = FederationJob::Create(config, *std::move(model), tokenizer);
  if (!created.ok()) {
    spdlog::error("job {} cannot start: {}", definition.name, std::string(created.status().message()));
    return end(v1::JOB_STATE_FAILED, created.status());
  }
  std::shared_ptr<FederationJob> job = *std::move(created);
  job->RecordPhase("load_model_seconds", load_seconds);
  spdlog::info("job {} is {}; model fingerprint {}", definition.name, job->job_id(), job->fingerprint());
  if (metrics_ != nullptr) {
    ServerMetrics* metrics = metrics_;
    JobEvents events;
    events.upload_committed = [metrics](const std::string& site, const UploadStats& stats, double count_seconds) {
      metrics->UploadCommitted(site, stats.wire_bytes, stats.seconds, stats.weights, count_seconds);
    };
    const std::string name = definition.name;
    events.round_closed = [metrics, name](int round, double seconds) {
      metrics->RoundClosed(seconds);
      metrics->SetCurrentRound(name, round + 1);
    };
    job->SetEvents(std::move(events));
  }
  std::vector<Reply> offers;
  {
    absl::MutexLock lock(&mu_);
    entry->summary.set_job_id(job->job_id());
    entry->summary.set_rounds_total(job->NumRounds());
    (void)PersistLocked(*entry);
    if (!shutdown_.empty()) {
      return absl::CancelledError(shutdown_);
    }
    if (!entry->abort_reason.empty()) job->Abort(entry->abort_reason);
    if (metrics_ != nullptr) metrics_->SetCurrentRound(definition.name, job->RoundsClosed());
    running_ = job;
    job->Start();
    offers = CollectOffersLocked(0);
  }
  for (auto& [done, result] : offers) done(std::move(result));

  const absl::Status result = job->WaitUntilFinished();
  if (absl::IsCancelled(result)) {
    // SIGTERM/SIGINT: every step the job took is durable; it resumes at the next start.
    job->Stop();
    spdlog::info("server stopped ({}); job {} ({}) can be resumed at {}: start the server again with the same config",
                 std::string(result.message()), definition.name, job->job_id(), job->ResumePoint());
    {
      absl::MutexLock lock(&mu_);
      running_ = nullptr;
      running_entry_ = nullptr;
    }
    if (log_ != nullptr) log_->Detach();
    return result;
  }
  // Let every joined site learn the outcome from its long poll before the next job.
  const std::vector<std::string> untold = job->WaitForClientsToLearnOutcome(int64_t{1000} * (config.poll_window_seconds + 5));
  if (!untold.empty()) {
    spdlog::warn("{} joined sites did not poll for the outcome of job {}: {}", untold.size(), definition.name,
                 absl::StrJoin(untold, ", "));
  }
  job->Stop();
  bool aborted = false;
  {
    absl::MutexLock lock(&mu_);
    entry->summary.set_rounds_closed(job->RoundsClosed());
    running_ = nullptr;
    running_entry_ = nullptr;
    aborted = !entry->abort_reason.empty();
  }
  if (result.ok()) {
    spdlog::info("job {} done: pruned model in {}/model, report {}/report.json", definition.name, config.output_dir,
                 config.output_dir);
    return end(v1::JOB_STATE_DONE, result);
  }
  return end(aborted ? v1::JOB_STATE_ABORTED : v1::JOB_STATE_FAILED, result);
}

void JobQueue::Ended(Entry* entry, v1::JobState state, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  entry->summary.set_state(state);
  entry->summary.set_reason(reason);
  entry->summary.set_finished_unix_ms(clock_());
  if (running_entry_ == entry) running_entry_ = nullptr;
  (void)PersistLocked(*entry);
  UpdateJobCountsLocked();
}

void JobQueue::RequestShutdown(const std::string& why) {
  absl::MutexLock lock(&mu_);
  shutdown_ = why;
  if (running_ != nullptr) running_->RequestShutdown(why);
}

absl::StatusOr<std::pair<v1::JobSummary, int>> JobQueue::Submit(const std::string& yaml_text, const std::string& source) {
  if (yaml_text.size() > (1 << 20)) return absl::InvalidArgumentError(absl::StrCat(source, ": a job YAML over 1 MiB"));
  ASSIGN_OR_RETURN(JobDefinition definition, ParseJobYaml(yaml_text, source, server_));
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(AddLocked(std::move(definition), /*own=*/false, /*persist=*/true));
  int ahead = 0;
  for (const auto& e : entries_) {
    if (e.get() != entries_.back().get() && !HasEnded(e->summary.state())) ++ahead;
  }
  UpdateJobCountsLocked();
  spdlog::info("job {} submitted from {} ({} jobs ahead of it)", entries_.back()->summary.name(), source, ahead);
  return std::make_pair(SummaryLocked(*entries_.back()), ahead);
}

std::vector<v1::JobSummary> JobQueue::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::JobSummary> out;
  for (const auto& e : entries_) out.push_back(SummaryLocked(*e));
  return out;
}

absl::StatusOr<std::pair<v1::JobSummary, nlohmann::json>> JobQueue::Status(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  const Entry* entry = nullptr;
  if (name.empty()) {
    entry = running_entry_;
    for (const auto& e : entries_) {
      if (running_entry_ == nullptr && HasEnded(e->summary.state()) &&
          (entry == nullptr || e->summary.finished_unix_ms() >= entry->summary.finished_unix_ms())) {
        entry = e.get();
      }
    }
    if (entry == nullptr) return absl::NotFoundError("no job is running and none has ended");
  } else {
    entry = FindLocked(name);
    if (entry == nullptr) return absl::NotFoundError(absl::StrCat("no job named ", name));
  }
  nlohmann::json detail = nlohmann::json::object();
  if (entry == running_entry_ && running_ != nullptr) detail = running_->StatusDetail();
  return std::make_pair(SummaryLocked(*entry), std::move(detail));
}

absl::StatusOr<v1::JobSummary> JobQueue::Abort(const std::string& name, const std::string& reason, const std::string& by) {
  absl::MutexLock lock(&mu_);
  Entry* entry = FindLocked(name);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("no job named ", name));
  if (HasEnded(entry->summary.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", name, " has ended already (", StateName(entry->summary.state()), ")"));
  }
  const std::string why = absl::StrCat("aborted by ", by.empty() ? "an operator" : by, reason.empty() ? "" : ": ", reason);
  spdlog::warn("job {} {}", name, why);
  if (entry->abort_reason.empty()) entry->abort_reason = why;
  if (entry->summary.state() == v1::JOB_STATE_QUEUED) {
    entry->summary.set_state(v1::JOB_STATE_ABORTED);
    entry->summary.set_reason(why);
    entry->summary.set_finished_unix_ms(clock_());
    (void)PersistLocked(*entry);
    UpdateJobCountsLocked();
  } else if (entry == running_entry_ && running_ != nullptr) {
    running_->Abort(why);
  }
  return SummaryLocked(*entry);
}

std::vector<v1::SiteSummary> JobQueue::Sites() const {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_();
  nlohmann::json detail;
  if (running_ != nullptr) detail = running_->StatusDetail();
  std::vector<v1::SiteSummary> out;
  for (const std::string& name : server_.allowed_clients) {
    v1::SiteSummary s;
    s.set_identity(name);
    const auto seen = seen_.find(name);
    const bool ever = seen != seen_.end();
    const double ago = ever ? (now - seen->second.last_seen_ms) / 1000.0 : -1.0;
    bool connected = ever && (seen->second.held_polls > 0 || ago < server_.site_timeout_seconds);
    std::string activity = !ever ? "never connected" : seen->second.held_polls > 0 ? "waiting for a job" : "";
    if (detail.is_object() && detail.contains("sites")) {
      for (const nlohmann::json& site : detail["sites"]) {
        if (site.value("site", "") != name || site.value("state", "") == "not joined") continue;
        s.set_job(running_entry_ != nullptr ? running_entry_->summary.name() : "");
        activity = absl::StrCat(site.value("state", ""), ": ", site.value("detail", ""));
        if (site.value("state", "") == "lost") connected = false;
      }
    }
    if (activity.empty()) activity = connected ? "connected" : "not connected";
    if (ever && seen->second.certificate_expires_ms != 0) {
      s.set_certificate_expires_unix_ms(seen->second.certificate_expires_ms);
      const int64_t days = (seen->second.certificate_expires_ms - now) / (int64_t{1000} * 86400);
      if (days < 30) absl::StrAppend(&activity, "; certificate expires in ", days, " days");
    }
    s.set_connected(connected);
    s.set_activity(activity);
    s.set_last_seen_seconds_ago(ago);
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::pair<std::string, bool>> JobQueue::LogOf(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  const Entry* entry = FindLocked(name);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("no job named ", name));
  return std::make_pair(entry->log_path, HasEnded(entry->summary.state()));
}

std::shared_ptr<FederationJob> JobQueue::Running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

absl::StatusOr<std::shared_ptr<FederationJob>> JobQueue::JobToJoin(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  if (running_ != nullptr && (job_id.empty() || job_id == running_->job_id())) return running_;
  // A job that is queued, or starting (loading its model, which is when its id becomes
  // known after a restart), may be the one asked for: the site retries.
  bool pending = false;
  for (const auto& e : entries_) {
    if (!job_id.empty() && e->summary.job_id() == job_id && HasEnded(e->summary.state())) {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " (", e->summary.name(), ") is not running: it is ",
                                                        StateName(e->summary.state()),
                                                        e->summary.reason().empty() ? "" : ": ", e->summary.reason()));
    }
    pending = pending || !HasEnded(e->summary.state());
  }
  if (pending) return absl::UnavailableError("the server is starting a job; retry");
  if (!job_id.empty()) return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is not known to this server"));
  return absl::UnavailableError("no job is running; wait for one with WaitForJob");
}

std::optional<v1::JobOffer> JobQueue::OfferLocked(const std::string& site, const std::vector<std::string>& skip) const {
  // A finished job is still offered while it runs down, so that a site restarted in that
  // time learns the outcome; a site that took part skips it.
  if (running_ == nullptr || running_entry_ == nullptr) return std::nullopt;
  if (running_->allowlist().count(site) == 0) return std::nullopt;
  if (std::find(skip.begin(), skip.end(), running_->job_id()) != skip.end()) return std::nullopt;
  v1::JobOffer offer;
  offer.set_state(v1::OFFER_STATE_OFFERED);
  offer.set_job_id(running_->job_id());
  offer.set_job_name(running_entry_->summary.name());
  offer.set_model_name(running_entry_->definition.config.model_name);
  offer.set_model_fingerprint(running_->fingerprint());
  return offer;
}

uint64_t JobQueue::WaitForJob(const std::string& site, const v1::JobWaitRequest& request, OfferCallback done) {
  std::vector<std::string> skip(request.skip_job_ids().begin(), request.skip_job_ids().end());
  if (skip.size() > 1000) skip.resize(1000);
  std::optional<v1::JobOffer> offer;
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    SiteSeen& seen = seen_[site];
    seen.last_seen_ms = clock_();
    offer = OfferLocked(site, skip);
    if (!offer.has_value() && shutdown_.empty()) {
      id = next_waiter_id_++;
      ++seen.held_polls;
      offer_waiters_.push_back(
          {id, site, std::move(skip), clock_() + int64_t{1000} * server_.poll_window_seconds, std::move(done)});
    }
  }
  if (id != 0) return id;
  if (offer.has_value()) {
    done(*offer);
  } else {
    done(absl::UnavailableError("server is shutting down"));
  }
  return 0;
}

void JobQueue::CancelJobWait(uint64_t id) {
  OfferCallback done;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = offer_waiters_.begin(); it != offer_waiters_.end(); ++it) {
      if (it->id != id) continue;
      SiteSeen& seen = seen_[it->site];
      seen.held_polls = std::max(0, seen.held_polls - 1);
      seen.last_seen_ms = clock_() - int64_t{1000} * server_.site_timeout_seconds;  // gone now
      done = std::move(it->done);
      offer_waiters_.erase(it);
      break;
    }
  }
  if (done) done(absl::CancelledError("the site went away"));
}

std::vector<JobQueue::Reply> JobQueue::CollectOffersLocked(int64_t now_ms) {
  std::vector<Reply> replies;
  std::vector<OfferWaiter> keep;
  for (OfferWaiter& w : offer_waiters_) {
    std::optional<v1::JobOffer> offer = OfferLocked(w.site, w.skip);
    const bool expired = now_ms != 0 && now_ms >= w.expires_ms;
    if (!offer.has_value() && !expired) {
      keep.push_back(std::move(w));
      continue;
    }
    SiteSeen& seen = seen_[w.site];
    seen.held_polls = std::max(0, seen.held_polls - 1);
    seen.last_seen_ms = clock_();
    if (!offer.has_value()) {
      offer.emplace();
      offer->set_state(v1::OFFER_STATE_NONE);
    }
    replies.emplace_back(std::move(w.done), *offer);
  }
  offer_waiters_.swap(keep);
  return replies;
}

absl::Status JobQueue::Decline(const std::string& site, const std::string& job_id, const std::string& reason) {
  std::shared_ptr<FederationJob> job = Running();
  if (job == nullptr || job->job_id() != job_id) {
    return absl::NotFoundError(absl::StrCat("job ", job_id, " is not running"));
  }
  job->Decline(site, reason.substr(0, 1000));
  return absl::OkStatus();
}

void JobQueue::NoteSeen(const std::string& site, const std::string& certificate_pem) {
  const size_t hash = certificate_pem.empty() ? 0 : std::hash<std::string>()(certificate_pem);
  {
    absl::MutexLock lock(&mu_);
    SiteSeen& seen = seen_[site];
    seen.last_seen_ms = clock_();
    if (hash == 0 || hash == seen.certificate_hash) return;
  }
  // A certificate not seen before from this site (its first call, or a renewed one).
  const absl::Time not_after = CertificateNotAfter(certificate_pem);
  const int64_t not_after_ms = not_after == absl::InfiniteFuture() ? 0 : absl::ToUnixMillis(not_after);
  if (not_after_ms != 0 && not_after < absl::Now() + absl::Hours(24 * 30)) {
    spdlog::warn("site {}'s certificate expires in {} days ({}); issue it a new one (docs/pki.md)", site,
                 absl::ToInt64Hours(not_after - absl::Now()) / 24,
                 absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", not_after, absl::UTCTimeZone()));
  }
  absl::MutexLock lock(&mu_);
  SiteSeen& seen = seen_[site];
  seen.certificate_hash = hash;
  seen.certificate_expires_ms = not_after_ms;
}

void JobQueue::TickerLoop() {
  while (true) {
    std::vector<Reply> replies;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_ticker_), absl::Milliseconds(250));
      if (stop_ticker_) return;
      replies = CollectOffersLocked(clock_());
      if (metrics_ != nullptr) {
        const int64_t now = clock_();
        int connected = 0;
        for (const auto& [site, seen] : seen_) {
          connected += seen.held_polls > 0 || now - seen.last_seen_ms < int64_t{1000} * server_.site_timeout_seconds;
        }
        metrics_->SetConnectedSites(connected);
        metrics_->SetLiveSites(running_ != nullptr ? static_cast<int>(running_->LiveSites()) : 0);
      }
    }
    for (auto& [done, result] : replies) done(std::move(result));
  }
}

}  // namespace fedprllm
