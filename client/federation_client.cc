// The client daemon's federation loop: join with the model fingerprint, calibrate, upload
// masks, fetch and apply decisions, with retries and backoff.
#include "client/federation_client.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/round_progress.h"
#include "client/upload_stream.h"
#include "common/crash_point.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "engine/calibration_data.h"
#include "engine/site_session.h"
#include "model/llama_config.h"
#include "model/model_and_tokenizer.h"
#include "model/perplexity.h"
#include "model/tokenizer.h"
#include "model/torch_wall.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/payload_convert.h"
#include "secagg/crypto.h"
#include "secagg/fixed_point.h"
#include "secagg/secagg_proto.h"
#include "tls/grpc_log.h"
#include "tls/key_pair_check.h"
#include "tls/server_probe.h"

namespace fedprllm {

bool IsTransient(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kCancelled:  // the server ended the call while shutting down
      return true;
    default:
      return false;
  }
}

absl::StatusOr<RoundDecision> DecodeDecisionStream(const std::vector<v1::DecisionChunk>& stream, int round,
                                                   const v1::JobSpec& job, const std::vector<int32_t>& layers) {
  std::map<std::string, std::vector<int64_t>> expected;
  for (const v1::TensorSpec& t : job.tensors()) {
    for (int32_t l : layers) {
      if (t.layer() == l) expected[t.name()] = std::vector<int64_t>(t.shape().begin(), t.shape().end());
    }
  }
  const MaskPattern pattern{job.pattern().n(), job.pattern().m()};
  const JobTensorTable table(job);
  std::map<std::string, TensorDecision> decisions;
  std::optional<MaskAssembler> mask;
  std::optional<Float32Assembler> scale;
  auto finish = [&]() -> absl::Status {
    if (mask.has_value()) {
      const std::vector<PayloadTensor> tensors = mask->header().tensors;
      ASSIGN_OR_RETURN(std::vector<PackedMask> masks, mask->Finish());
      mask.reset();
      for (size_t i = 0; i < tensors.size(); ++i) {
        decisions[tensors[i].name].name = tensors[i].name;
        decisions[tensors[i].name].mask = std::move(masks[i]);
      }
    } else if (scale.has_value()) {
      const PayloadTensor tensor = scale->header().tensors.front();
      ASSIGN_OR_RETURN(std::vector<float> values, scale->Finish());
      scale.reset();
      ASSIGN_OR_RETURN(decisions[tensor.name].scale, TorchCall("building a scale tensor", [&] {
                         return at::from_blob(values.data(), tensor.shape, at::kFloat).clone();
                       }));
    }
    return absl::OkStatus();
  };
  for (const v1::DecisionChunk& message : stream) {
    if (message.round() != round) {
      return absl::InvalidArgumentError(absl::StrCat("decision message for round ", message.round(), ", expected ", round));
    }
    if (message.has_header()) {
      if ((mask.has_value() && !mask->complete()) || (scale.has_value() && !scale->complete())) {
        return absl::InvalidArgumentError("decision: header before the previous payload's last chunk");
      }
      RETURN_IF_ERROR(finish());
      ASSIGN_OR_RETURN(PayloadHeader header, HeaderFromProto(message.header(), table));
      if (header.kind == PayloadKind::kPruneMask) {
        for (const PayloadTensor& t : header.tensors) {
          if (decisions.count(t.name) != 0) {
            return absl::InvalidArgumentError(absl::StrCat("decision mask for ", t.name, " sent twice"));
          }
        }
        MaskExpectations expect;
        expect.shapes = expected;
        expect.pattern = pattern;
        expect.max_chunk_bytes = std::max<int64_t>(job.max_chunk_bytes(), 1);
        ASSIGN_OR_RETURN(MaskAssembler a, MaskAssembler::Create(std::move(header), expect));
        mask.emplace(std::move(a));
      } else if (header.kind == PayloadKind::kWeightScale && job.weight_scaling()) {
        const std::string name = header.tensors.size() == 1 ? header.tensors.front().name : "";
        auto d = decisions.find(name);
        if (d == decisions.end() || d->second.scale.defined()) {
          return absl::InvalidArgumentError(
              absl::StrCat("WEIGHT_SCALE for ", header.Label(), "does not follow its mask exactly once"));
        }
        Float32Expectations expect;
        expect.shape = expected.at(name);  // present: the mask's assembler accepted it
        expect.max_chunk_bytes = std::max<int64_t>(job.max_chunk_bytes(), 1);
        ASSIGN_OR_RETURN(Float32Assembler a, Float32Assembler::Create(std::move(header), expect));
        scale.emplace(std::move(a));
      } else {
        return absl::UnimplementedError(absl::StrCat("decision payload kind ", static_cast<int>(header.kind),
                                                     " for ", header.Label(), "is not handled"));
      }
    } else if (message.has_chunk()) {
      v1::PayloadData copy = message.chunk();
      PayloadChunk chunk = ChunkFromProto(&copy);
      if (mask.has_value()) {
        RETURN_IF_ERROR(mask->AddChunk(chunk));
      } else if (scale.has_value()) {
        RETURN_IF_ERROR(scale->AddChunk(chunk));
      } else {
        return absl::InvalidArgumentError("decision chunk before any header");
      }
    } else {
      return absl::InvalidArgumentError("empty decision message");
    }
  }
  RETURN_IF_ERROR(finish());
  RoundDecision out;
  for (const auto& [name, shape] : expected) {
    auto it = decisions.find(name);
    if (it == decisions.end()) return absl::InvalidArgumentError(absl::StrCat("decision has no mask for ", name));
    if (job.weight_scaling() && !it->second.scale.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("decision has no WEIGHT_SCALE for ", name));
    }
    out.push_back(std::move(it->second));
  }
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kRoundGonePayload[] = "fedprllm/round-gone";

// A FAILED_PRECONDITION from the server that means "this round no longer takes this upload".
absl::Status MarkRoundGone(absl::Status status) {
  status.SetPayload(kRoundGonePayload, absl::Cord("1"));
  return status;
}
bool IsRoundGone(const absl::Status& status) { return status.GetPayload(kRoundGonePayload).has_value(); }

std::string RandomHex(int bytes) {
  std::random_device device;
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    const unsigned v = device() & 0xFF;
    out.push_back(kHex[v >> 4]);
    out.push_back(kHex[v & 15]);
  }
  return out;
}

// A local model of this site, loaded once, with its calibration windows (tokenized by the
// model's own tokenizer) and fingerprint.
struct LocalModel {
  LlamaModel model;
  at::Tensor samples;
  std::string fingerprint;
};

// Loads `path` (tokenizer `tokenizer`, "" = beside it) and draws this site's calibration
// windows with it.
absl::StatusOr<std::unique_ptr<LocalModel>> LoadLocalModel(const ClientConfig& config, const std::string& path,
                                                           const std::string& tokenizer_path) {
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(path, tokenizer_path));
  auto local = std::make_unique<LocalModel>(LocalModel{std::move(loaded.model), at::Tensor(), ""});
  if (absl::Status fits = CheckSeqlenFitsModel("config key 'seqlen':", config.seqlen, local->model.config());
      !fits.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(fits.message(), " (model ", path, ")"));
  }
  std::vector<CalibrationSource> sources;
  for (const std::string& spec : config.calibration) {
    ASSIGN_OR_RETURN(CalibrationSource source, ParseCalibrationSource(spec));
    sources.push_back(std::move(source));
  }
  CalibrationReadOptions read;
  read.vocab_size = local->model.config().vocab_size;
  read.log = [](const std::string& line) { spdlog::info("calibration: {}", line); };
  ASSIGN_OR_RETURN(std::vector<int> tokens, TokenizeCalibrationSources(loaded.tokenizer, sources, read));
  SamplingOptions sampling;
  sampling.nsamples = config.nsamples;
  sampling.seqlen = config.seqlen;
  sampling.seed = config.seed;
  ASSIGN_OR_RETURN(local->samples, SampleWindows(tokens, sampling));
  local->fingerprint = local->model.Fingerprint();
  spdlog::info("model {} loaded (fingerprint {}); {} calibration tokens from {} sources, {} windows of {} (seed {}) "
               "in {:.2f} s",
               path, local->fingerprint.substr(0, 16), tokens.size(), sources.size(), config.nsamples, config.seqlen,
               config.seed, std::chrono::duration<double>(Clock::now() - start).count());
  return local;
}

// One site's conversation with the server: wait for a job that names it, find its model,
// take part in the job's rounds, then wait for the next job.
class FederationClient {
 public:
  FederationClient(const ClientConfig& config, LocalPruneOptions local)
      : config_(config), local_base_(std::move(local)) {}

  // Loads the config's `model` now, so that a broken one fails at start.
  absl::Status Preload() {
    if (config_.model.empty()) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::unique_ptr<LocalModel> local, LoadLocalModel(config_, config_.model, config_.tokenizer));
    models_.emplace(config_.model, std::move(local));
    return absl::OkStatus();
  }

  // Checks this site's TLS files (a bad one fails here, in words) and builds the channel.
  absl::Status Connect() {
    InstallGrpcLogRouting({TlsRole::kClient, config_.server_address});
    grpc::ChannelArguments& args = channel_args_;
    args.SetMaxReceiveMessageSize(64 << 20);
    // Each channel gets its own subchannels: NewChannel() after a failure must really
    // connect again, not reuse a shared subchannel that is still in its failure backoff.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    std::shared_ptr<grpc::ChannelCredentials>& credentials = credentials_;
    if (config_.insecure) {
      spdlog::warn("insecure: true: PLAINTEXT connection, the server is not verified. Never use this outside a test.");
      credentials = grpc::InsecureChannelCredentials();
    } else {
      const TlsFiles files{config_.tls.cert, config_.tls.key, config_.tls.ca};
      diagnosis_ = std::make_unique<UnavailableDiagnosis>(config_.server_address, config_.server_name, files);
      grpc::SslCredentialsOptions options;
      ASSIGN_OR_RETURN(options.pem_root_certs, ReadFile(config_.tls.ca, "tls.ca"));
      ASSIGN_OR_RETURN(options.pem_private_key, ReadFile(config_.tls.key, "tls.key"));
      ASSIGN_OR_RETURN(options.pem_cert_chain, ReadFile(config_.tls.cert, "tls.cert"));
      credentials = grpc::SslCredentials(options);
      if (!config_.server_name.empty()) args.SetSslTargetNameOverride(config_.server_name);
    }
    NewChannel();
    return absl::OkStatus();
  }

  // A fresh channel to the server. gRPC 1.51's channel stays in TRANSIENT_FAILURE after the
  // server went away and fails calls with the old error for many seconds after it is back;
  // the retry loop (which has its own backoff) replaces the channel before retrying an
  // UNAVAILABLE call.
  void NewChannel() {
    auto stub = std::shared_ptr<v1::FedPrLLM::Stub>(
        v1::FedPrLLM::NewStub(grpc::CreateCustomChannel(config_.server_address, credentials_, channel_args_)));
    absl::MutexLock lock(&session_mu_);
    stub_ = std::move(stub);
  }

  std::shared_ptr<v1::FedPrLLM::Stub> Stub() {
    absl::MutexLock lock(&session_mu_);
    return stub_;
  }

  ~FederationClient() { StopHeartbeats(); }

  // Jobs one after the other until exit_after_jobs of them have ended (then the last one's
  // status), or a permanent failure to reach the server.
  absl::Status Serve() {
    StartHeartbeats();
    std::vector<std::string> finished;
    int jobs = 0;
    while (true) {
      SetActivity(v1::SITE_ACTIVITY_WAITING, -1);
      ASSIGN_OR_RETURN(v1::JobOffer offer, WaitForJob(finished));
      if (offer.state() != v1::OFFER_STATE_OFFERED) continue;
      finished.push_back(offer.job_id());
      if (finished.size() > 100) finished.erase(finished.begin());
      spdlog::info("job {} ({}) offered: model {}", offer.job_name(), offer.job_id(), offer.model_name());
      absl::Status result;
      absl::StatusOr<const LocalModel*> local = ModelFor(offer);
      if (!local.ok()) {
        result = local.status();
        spdlog::error("declining job {}: {}", offer.job_name(), std::string(result.message()));
        Decline(offer, std::string(result.message()));
      } else {
        result = RunJob(offer, **local);
        if (result.ok()) {
          spdlog::info("job {} done; {} rounds uploaded, {} wire bytes in total", offer.job_name(), rounds_uploaded_,
                       total_wire_bytes_);
        } else {
          spdlog::error("job {} ended for this site: {}: {}", offer.job_name(),
                        absl::StatusCodeToString(result.code()), std::string(result.message()));
        }
      }
      if (config_.exit_after_jobs > 0 && ++jobs >= config_.exit_after_jobs) return result;
      if (config_.exit_after_jobs == 0) spdlog::info("waiting for the next job");
    }
  }

  // Takes part in the offered job until it is done or failed. A job that ended while this
  // site was away (its Join names it as done) counts as done.
  absl::Status RunJob(const v1::JobOffer& offer, const LocalModel& local) {
    absl::Status result = TakePart(offer, local);
    if (absl::IsFailedPrecondition(result) && absl::StrContains(result.message(), "is not running: it is done")) {
      spdlog::info("job {} was done without this site's last steps: {}", offer.job_name(),
                   std::string(result.message()));
      return absl::OkStatus();
    }
    return result;
  }

  absl::Status TakePart(const v1::JobOffer& offer, const LocalModel& local) {
    {
      absl::MutexLock lock(&session_mu_);
      token_.clear();
    }
    model_ = &local.model;
    samples_ = local.samples;
    fingerprint_ = local.fingerprint;
    local_ = local_base_;
    local_.batch_progress = [this](const BatchProgress& p) { OnBatch(p); };
    site_.reset();
    job_id_.clear();
    job_name_ = offer.job_name();
    offered_job_id_ = offer.job_id();
    rounds_uploaded_ = 0;
    total_wire_bytes_ = 0;
    RETURN_IF_ERROR(Join());
    int last_completed = -1;
    while (true) {
      SetActivity(v1::SITE_ACTIVITY_WAITING, -1);
      ASSIGN_OR_RETURN(v1::RoundAssignment a, WaitForRound(last_completed));
      switch (a.state()) {
        case v1::ROUND_STATE_NOT_READY:
          continue;
        case v1::ROUND_STATE_JOB_DONE:
          return absl::OkStatus();
        case v1::ROUND_STATE_JOB_FAILED:
          return absl::AbortedError(absl::StrCat("the server reports the job failed: ", a.message()));
        case v1::ROUND_STATE_OPEN: {
          const absl::Status round = DoRound(a);
          if (IsRoundGone(round)) {
            // Closed or past its deadline before this site's upload was committed: the
            // other sites' votes decide it. Wait for the next round (protocol §4).
            spdlog::warn("round {}: not counted for this site ({}); waiting for the next round", a.round(),
                         std::string(round.message()));
          } else {
            RETURN_IF_ERROR(round);
          }
          last_completed = a.round();
          break;
        }
        default:
          return absl::InternalError(absl::StrCat("unknown round state ", a.state()));
      }
    }
  }

 private:
  static absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& key) {
    ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
    if (text.empty()) return absl::InvalidArgumentError(absl::StrCat("config key '", key, "': ", path, " is empty"));
    return text;
  }

  std::unique_ptr<grpc::ClientContext> Context(double timeout_seconds) const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
    return context;
  }

  // What a long-running call (the round's upload stream) tells Retrying.
  struct RetryControl {
    // Called after a failed call: true when it got further than the earlier ones, which
    // starts the failure streak (retry_max_seconds) and the backoff anew. Default: never.
    std::function<bool()> progressed;
    // Notified when the caller gives up: the backoff sleep ends and the last error is
    // returned. Default: none.
    const absl::Notification* stop = nullptr;
  };

  // Runs `call` until it succeeds, fails permanently, or transient failures have lasted
  // retry_max_seconds. UNAUTHENTICATED re-joins once per attempt (the server restarted).
  // (An overload, not a `= {}` default argument: clang refuses a default argument that needs
  // RetryControl's member initializers inside the class that declares it.)
  template <typename T>
  absl::StatusOr<T> Retrying(const std::string& what, const std::function<absl::StatusOr<T>()>& call) {
    return Retrying<T>(what, call, RetryControl{});
  }
  template <typename T>
  absl::StatusOr<T> Retrying(const std::string& what, const std::function<absl::StatusOr<T>()>& call,
                             const RetryControl& control) {
    auto first = Clock::now();
    double delay = config_.retry_initial_seconds;
    std::mt19937_64 rng(std::random_device{}());
    while (true) {
      const std::string token = what == "Join" ? "" : Token();
      absl::StatusOr<T> result = call();
      if (result.ok()) return result;
      absl::Status s = result.status();
      if (control.stop != nullptr && control.stop->HasBeenNotified()) return s;
      if (control.progressed && control.progressed()) {
        first = Clock::now();
        delay = config_.retry_initial_seconds;
      }
      if (s.code() == absl::StatusCode::kUnauthenticated && what != "Join") {
        spdlog::warn("{}: session not recognized ({}); joining again", what, std::string(s.message()));
        RETURN_IF_ERROR(Rejoin(token));
        continue;
      }
      // A session of this identity that is still live (an earlier process of this site not
      // yet declared lost, or a second process): the server admits this one once the other
      // has been silent for its site timeout.
      // RESOURCE_EXHAUSTED on a call whose request is a few bytes is the server shedding load
      // (its transport memory quota), never a size limit of ours.
      const bool retried = IsTransient(s) || (what == "Join" && s.code() == absl::StatusCode::kAlreadyExists) ||
                           (what != "UploadPayloads" && s.code() == absl::StatusCode::kResourceExhausted);
      if (!retried) return s;
      RETURN_IF_ERROR(DiagnoseUnavailable(what, &s));
      const double waited = std::chrono::duration<double>(Clock::now() - first).count();
      if (waited + delay > config_.retry_max_seconds) {
        return absl::Status(s.code(), absl::StrCat(what, " kept failing for ", static_cast<int>(waited),
                                                   " s (retry_max_seconds ", config_.retry_max_seconds,
                                                   "); last error: ", s.message()));
      }
      const double jittered = delay * std::uniform_real_distribution<double>(0.8, 1.2)(rng);
      spdlog::warn("{} failed ({}: {}); retrying in {:.1f} s", what, absl::StatusCodeToString(s.code()),
                   std::string(s.message()), jittered);
      if (control.stop != nullptr) {
        if (control.stop->WaitForNotificationWithTimeout(absl::Milliseconds(jittered * 1000))) return s;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(jittered * 1000)));
      }
      delay = std::min(60.0, delay * 2);
      // Created now, just before the next attempt: a new channel connects at once, and one
      // made before the sleep would already have failed again while the server was down.
      if (s.code() == absl::StatusCode::kUnavailable) NewChannel();
    }
  }

  // gRPC reports a refused certificate, a wrong server name and a network that is down all
  // as UNAVAILABLE. For an UNAVAILABLE `*s` over TLS this probes the server (rate-limited,
  // tls/server_probe.h): a permanent TLS problem comes back as FAILED_PRECONDITION naming
  // `what` and the cause; otherwise OK, with what the probe saw appended to `*s`.
  absl::Status DiagnoseUnavailable(const std::string& what, absl::Status* s) {
    if (diagnosis_ == nullptr || s->code() != absl::StatusCode::kUnavailable) return absl::OkStatus();
    std::string seen;
    if (absl::Status permanent = diagnosis_->Diagnose(&seen); !permanent.ok()) {
      return absl::Status(permanent.code(), absl::StrCat(what, " cannot succeed: ", permanent.message(),
                                                         " (gRPC said: ", s->message(), ")"));
    }
    if (!seen.empty()) *s = absl::Status(s->code(), absl::StrCat(s->message(), "; ", seen));
    return absl::OkStatus();
  }

  absl::StatusOr<v1::JobOffer> WaitForJob(const std::vector<std::string>& skip) {
    return Retrying<v1::JobOffer>("WaitForJob", [&]() -> absl::StatusOr<v1::JobOffer> {
      v1::JobWaitRequest request;
      request.set_client_name(config_.name);
      request.set_instance_id(instance_id_);
      request.set_protocol_version(kProtocolVersion);
      for (const std::string& id : skip) request.add_skip_job_ids(id);
      v1::JobOffer offer;
      auto context = Context(330);  // longer than any poll window (at most 300 s)
      RETURN_IF_ERROR(FromGrpcStatus(Stub()->WaitForJob(context.get(), request, &offer)));
      return offer;
    });
  }

  void Decline(const v1::JobOffer& offer, const std::string& reason) {
    v1::DeclineJobRequest request;
    request.set_job_id(offer.job_id());
    request.set_reason(reason);
    v1::DeclineJobResponse response;
    auto context = Context(30);
    if (absl::Status s = FromGrpcStatus(Stub()->DeclineJob(context.get(), request, &response)); !s.ok()) {
      spdlog::warn("could not tell the server that this site declines job {}: {}", offer.job_name(),
                   std::string(s.message()));
    }
  }

  // This site's model for the offered job: `models[model_name]`, else `model`; loaded once.
  // FAILED_PRECONDITION (the job is declined) when the site has no such model or its
  // fingerprint differs.
  absl::StatusOr<const LocalModel*> ModelFor(const v1::JobOffer& offer) {
    std::string path, tokenizer;
    if (auto it = config_.models.find(offer.model_name()); it != config_.models.end()) {
      path = it->second;
    } else if (!config_.model.empty()) {
      path = config_.model;
      tokenizer = config_.tokenizer;
    } else {
      std::vector<std::string> names;
      for (const auto& [name, p] : config_.models) names.push_back(name);
      return absl::FailedPreconditionError(absl::StrCat("this site has no model named ", offer.model_name(),
                                                        " (its models: ", absl::StrJoin(names, ", "), ")"));
    }
    auto it = models_.find(path);
    if (it == models_.end()) {
      absl::StatusOr<std::unique_ptr<LocalModel>> loaded = LoadLocalModel(config_, path, tokenizer);
      if (!loaded.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("cannot load model ", offer.model_name(), " from ", path, ": ", loaded.status().message()));
      }
      it = models_.emplace(path, *std::move(loaded)).first;
    }
    if (it->second->fingerprint != offer.model_fingerprint()) {
      return absl::FailedPreconditionError(absl::StrCat("model fingerprint mismatch: server has ",
                                                        offer.model_fingerprint(), ", this site's ", offer.model_name(),
                                                        " (", path, ") has ", it->second->fingerprint));
    }
    return it->second.get();
  }

  // The current session token.
  std::string Token() {
    absl::MutexLock lock(&session_mu_);
    return token_;
  }

  // Joins again after `failed_token` was refused (server restarted, or this site was declared
  // lost), unless another thread already did.
  absl::Status Rejoin(const std::string& failed_token) {
    absl::MutexLock lock(&rejoin_mu_);
    if (Token() != failed_token) return absl::OkStatus();
    return Join();
  }

  absl::Status Join() {
    v1::JoinRequest request;
    request.set_client_name(config_.name);
    request.set_model_fingerprint(fingerprint_);
    request.set_protocol_version(kProtocolVersion);
    request.set_instance_id(instance_id_);
    request.set_job_id(offered_job_id_);
    ASSIGN_OR_RETURN(v1::JoinResponse response,
                     Retrying<v1::JoinResponse>("Join", [&]() -> absl::StatusOr<v1::JoinResponse> {
                       v1::JoinResponse r;
                       auto context = Context(std::min(60.0, config_.rpc_timeout_seconds));
                       RETURN_IF_ERROR(FromGrpcStatus(Stub()->Join(context.get(), request, &r)));
                       return r;
                     }));
    {
      absl::MutexLock lock(&session_mu_);
      token_ = response.session_token();
    }
    if (!job_id_.empty()) {
      if (response.job_id() != job_id_) {
        return absl::FailedPreconditionError(absl::StrCat("the server now runs job ", response.job_id(),
                                                          ", not job ", job_id_, " that this site was working on"));
      }
      spdlog::info("joined job {} again", job_id_);
      return absl::OkStatus();
    }
    job_id_ = response.job_id();
    job_ = response.job();
    if (job_.num_layers() != model_->config().num_hidden_layers) {
      return absl::FailedPreconditionError(absl::StrCat("job has ", job_.num_layers(), " layers, local model has ",
                                                        model_->config().num_hidden_layers));
    }
    local_.pattern.n = job_.pattern().n();
    local_.pattern.m = job_.pattern().m();
    local_.pattern.sparsity = job_.sparsity();
    RETURN_IF_ERROR(local_.pattern.Validate());
    if (job_.strategy() != v1::STRATEGY_ONE_SHOT && job_.strategy() != v1::STRATEGY_ITERATIVE &&
        job_.strategy() != v1::STRATEGY_EXACT) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id_, " uses strategy ", job_.strategy(), ", which this client does not know"));
    }
    spdlog::info("joined job {} at {}: {} strategy, {} layers, sparsity {} {}, weight_scaling {}", job_id_,
                 config_.server_address,
                 job_.strategy() == v1::STRATEGY_ONE_SHOT ? "one-shot"
                 : job_.strategy() == v1::STRATEGY_EXACT  ? "exact"
                                                          : "iterative",
                 job_.num_layers(), job_.sparsity(), local_.pattern.ToString(), job_.weight_scaling());
    return absl::OkStatus();
  }

  absl::StatusOr<v1::RoundAssignment> WaitForRound(int last_completed) {
    return Retrying<v1::RoundAssignment>("WaitForRound", [&]() -> absl::StatusOr<v1::RoundAssignment> {
      v1::WaitRequest request;
      request.set_session_token(Token());
      request.set_last_completed_round(last_completed);
      v1::RoundAssignment a;
      auto context = Context(330);  // longer than any poll window (at most 300 s)
      RETURN_IF_ERROR(FromGrpcStatus(Stub()->WaitForRound(context.get(), request, &a)));
      return a;
    });
  }

  // Computes the round's masks layer by layer and streams each layer's masks, as one
  // payload, as soon as they are computed (docs/round_protocol.md §4 step 4): the upload of
  // layer l overlaps the compute of layer l + 1, and at most one layer's masks are in memory.
  // An error before the upload is finished cancels its stream (RoundUploader's destructor),
  // so that the server commits nothing of it.
  absl::Status DoRound(const v1::RoundAssignment& a) {
    const std::vector<int32_t> layers(a.layers().begin(), a.layers().end());
    spdlog::info("round {} open: layers [{}]", a.round(), absl::StrJoin(layers, ","));
    const auto start = Clock::now();
    progress_.emplace(static_cast<int64_t>(layers.size()), absl::Milliseconds(config_.progress_log_seconds * 1000));
    progress_->Start(absl::Now());
    progress_round_ = a.round();
    progress_first_layer_ = layers.empty() ? 0 : layers.front();
    const JobTensorTable table(job_);
    UploadTally tally;
    std::unique_ptr<RoundUploader> upload;
    if (job_.strategy() == v1::STRATEGY_ONE_SHOT) {
      const int64_t n = model_->config().num_hidden_layers;
      if (static_cast<int64_t>(layers.size()) != n) {
        return absl::FailedPreconditionError(absl::StrCat("one-shot round lists ", layers.size(), " layers, model has ", n));
      }
      SetActivity(v1::SITE_ACTIVITY_CALIBRATING, a.round(), 0, 0, n);
      ASSIGN_OR_RETURN(upload, StartUpload(a.round(), static_cast<int>(n)));
      ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(*model_, samples_, local_));
      // PruneLocally's loop (engine/site_session.cc), so the masks are bit-identical to its.
      while (site.next_layer() < site.num_layers()) {
        const int64_t layer = site.next_layer();
        ASSIGN_OR_RETURN(LayerMasks masks, site.ComputeMasks());
        ASSIGN_OR_RETURN(const int64_t wire, QueueLayer(masks, table, *upload, &tally));
        ASSIGN_OR_RETURN(LayerLinears pruned, site.ApplyMasks(masks));
        masks.clear();
        RETURN_IF_ERROR(site.Advance(pruned));
        const int64_t done = site.next_layer();
        spdlog::info("round {}: calibrated layer {}/{}; its {} masks ({} wire bytes) handed to the upload stream",
                     a.round(), layer + 1, n, kNumLinears, wire);
        SetActivity(v1::SITE_ACTIVITY_CALIBRATING, a.round(), static_cast<int>(done), static_cast<int>(done),
                    static_cast<int>(n));
      }
    } else if (job_.strategy() == v1::STRATEGY_EXACT) {
      if (layers.size() != 1) return absl::FailedPreconditionError("exact round must list exactly one layer");
      ASSIGN_OR_RETURN(SiteSession & site, Session());
      RETURN_IF_ERROR(ApplyDecisionsBefore(site, layers[0], a.round()));
      SetActivity(v1::SITE_ACTIVITY_CALIBRATING, a.round(), layers[0], 0, 1);
      ASSIGN_OR_RETURN(const LayerStatistics statistics, site.ComputeStatistics());
      spdlog::info("computed the statistics of layer {}/{} ({} tokens)", layers[0] + 1, job_.num_layers(),
                   statistics.tokens);
      const double compute_seconds = std::chrono::duration<double>(Clock::now() - start).count();
      progress_.reset();
      if (job_.secure_aggregation().enabled()) return SendStatisticsSecurely(a.round(), statistics, compute_seconds);
      return SendStatistics(a.round(), statistics, compute_seconds);
    } else {
      if (layers.size() != 1) return absl::FailedPreconditionError("iterative round must list exactly one layer");
      ASSIGN_OR_RETURN(SiteSession & site, Session());
      RETURN_IF_ERROR(ApplyDecisionsBefore(site, layers[0], a.round()));
      SetActivity(v1::SITE_ACTIVITY_CALIBRATING, a.round(), layers[0], 0, 1);
      ASSIGN_OR_RETURN(LayerMasks layer_masks, site.ComputeMasks());
      spdlog::info("calibrated layer {}/{}", layers[0] + 1, job_.num_layers());
      ASSIGN_OR_RETURN(upload, StartUpload(a.round(), 1));
      RETURN_IF_ERROR(QueueLayer(layer_masks, table, *upload, &tally).status());
    }
    const double compute_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    progress_.reset();
    return FinishUpload(a.round(), *upload, tally, compute_seconds);
  }

  // Applies every earlier round's federated decision to `site` (iterative and exact rounds),
  // so the inputs of `layer` pass through the same pruned layers on every site.
  absl::Status ApplyDecisionsBefore(SiteSession& site, int layer, int round) {
    if (site.next_layer() < layer) SetActivity(v1::SITE_ACTIVITY_FETCHING, round);
    while (site.next_layer() < layer) {
      const int j = static_cast<int>(site.next_layer());
      ASSIGN_OR_RETURN(RoundDecision decision, Fetch(j));
      LayerLinears linears;
      for (int k = 0; k < kNumLinears; ++k) {
        const std::string name = LayerTensorName(j, kLinearNames[k]);
        const TensorDecision* d = nullptr;
        for (const TensorDecision& t : decision) d = t.name == name ? &t : d;
        if (d == nullptr) return absl::InternalError(absl::StrCat("decision of round ", j, " lacks ", name));
        ASSIGN_OR_RETURN(linears[k], ApplyTensorDecision(model_->tensors().at(name), *d));
      }
      RETURN_IF_ERROR(site.Advance(linears));
      spdlog::info("applied the federated decision of layer {}", j);
    }
    if (site.next_layer() != layer) {
      return absl::FailedPreconditionError(
          absl::StrCat("round asks for layer ", layer, " but this site is at layer ", site.next_layer()));
    }
    return absl::OkStatus();
  }

  // Exact rounds: sends the layer's statistics record in one UploadStatistics call, retried
  // like every call; a FAILED_PRECONDITION marks the round as gone.
  absl::Status SendStatistics(int round, const LayerStatistics& statistics, double compute_seconds) {
    SetActivity(v1::SITE_ACTIVITY_UPLOADING, round);
    v1::StatisticsUpload upload;
    upload.set_round(round);
    upload.set_layer(static_cast<int32_t>(statistics.layer));
    ASSIGN_OR_RETURN(*upload.mutable_statistics(), EncodeStatistics(statistics));
    upload.set_crc32c(crc32c::Value(upload.statistics().data(), upload.statistics().size()));
    const auto start = Clock::now();
    ASSIGN_OR_RETURN(const v1::UploadAck ack, Retrying<v1::UploadAck>("UploadStatistics", [&]() -> absl::StatusOr<v1::UploadAck> {
      upload.set_session_token(Token());  // the token may have changed by a re-join
      v1::UploadAck answer;
      auto context = Context(config_.rpc_timeout_seconds);
      const absl::Status s = FromGrpcStatus(Stub()->UploadStatistics(context.get(), upload, &answer));
      if (absl::IsFailedPrecondition(s)) return MarkRoundGone(s);
      if (!s.ok()) return s;
      return answer;
    }));
    const int64_t wire = static_cast<int64_t>(upload.ByteSizeLong()) + 5;
    total_wire_bytes_ += wire;
    ++rounds_uploaded_;
    spdlog::info("round {}: statistics computed in {:.2f} s; {} {} wire bytes in {:.2f} s ({} of the clients "
                 "committed so far)",
                 round, compute_seconds, ack.duplicate() ? "already committed (duplicate):" : "committed",
                 wire, std::chrono::duration<double>(Clock::now() - start).count(), ack.clients_committed());
    return absl::OkStatus();
  }

  // Exact rounds with secure aggregation (docs/secure_aggregation.md, "Transport"): the
  // statistics record, in fixed point, goes into the round's secure sum; the server learns
  // only the sum. Starts again from the key exchange (fresh keys) when the server says the
  // aggregation restarted, at most 5 times.
  absl::Status SendStatisticsSecurely(int round, const LayerStatistics& statistics, double compute_seconds) {
    SetActivity(v1::SITE_ACTIVITY_UPLOADING, round);
    const v1::SecureAggregationSpec& spec = job_.secure_aggregation();
    secagg::SessionConfig session;
    session.job_id = job_id_;
    session.round = round;
    session.sites.assign(spec.sites().begin(), spec.sites().end());
    session.threshold = spec.threshold();
    std::vector<double> values = {static_cast<double>(statistics.tokens)};
    for (const at::Tensor& sums : statistics.column_sums) {
      const at::Tensor host = sums.to(at::kCPU, at::kDouble).contiguous();
      values.insert(values.end(), host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
    }
    session.length = values.size();
    secagg::FixedPointCode code;
    code.fraction_bits = spec.fraction_bits();
    ASSIGN_OR_RETURN(const std::vector<uint64_t> input, secagg::EncodeFixedPoint(values, code));
    const auto start = Clock::now();
    for (int attempt = 1;; ++attempt) {
      ASSIGN_OR_RETURN(const bool done, AggregateOnce(session, input));
      if (done) break;
      if (attempt == 5) return absl::AbortedError(absl::StrCat("the secure aggregation of round ", round, " restarted 5 times"));
      spdlog::warn("round {}: the server restarted the secure aggregation; starting it again with fresh keys", round);
    }
    ++rounds_uploaded_;
    spdlog::info("round {}: statistics computed in {:.2f} s; secure aggregation done in {:.2f} s", round,
                 compute_seconds, std::chrono::duration<double>(Clock::now() - start).count());
    return absl::OkStatus();
  }

  // One run of the four steps of `session` with `input`. False when the server answered
  // ABORTED (it restarted the aggregation); a FAILED_PRECONDITION marks the round as gone.
  absl::StatusOr<bool> AggregateOnce(const secagg::SessionConfig& session, const std::vector<uint64_t>& input) {
    ASSIGN_OR_RETURN(const std::string key, ReadFile(config_.tls.key, "tls.key"));
    ASSIGN_OR_RETURN(const std::string cert, ReadFile(config_.tls.cert, "tls.cert"));
    ASSIGN_OR_RETURN(const std::string ca, ReadFile(config_.tls.ca, "tls.ca"));
    // The other sites check an advertisement's name against the certificate's common name.
    ASSIGN_OR_RETURN(const std::string name, secagg::CertificateCommonName(cert));
    ASSIGN_OR_RETURN(secagg::SecAggSite site, secagg::SecAggSite::Create(session, name, key, cert, ca));
    bool restarted = false;
    // One step, asked again every 250 ms until the server says it is complete (or restarted).
    auto step = [&](v1::SecAggRequest request) -> absl::StatusOr<v1::SecAggResponse> {
      request.set_round(session.round);
      for (;;) {
        ASSIGN_OR_RETURN(v1::SecAggResponse response,
                         Retrying<v1::SecAggResponse>("SecureAggregate", [&]() -> absl::StatusOr<v1::SecAggResponse> {
                           request.set_session_token(Token());
                           v1::SecAggResponse answer;
                           auto context = Context(config_.rpc_timeout_seconds);
                           const absl::Status s = FromGrpcStatus(Stub()->SecureAggregate(context.get(), request, &answer));
                           if (absl::IsAborted(s)) {  // not retried: the aggregation starts again
                             restarted = true;
                             return v1::SecAggResponse();
                           }
                           if (absl::IsFailedPrecondition(s)) return MarkRoundGone(s);
                           if (!s.ok()) return s;
                           return answer;
                         }));
        if (restarted || response.ready()) return response;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
    };

    v1::SecAggRequest request;
    request.set_step(v1::SECAGG_STEP_ADVERTISE);
    ASSIGN_OR_RETURN(const secagg::KeyAdvertisement advertisement, site.Advertise());
    *request.mutable_advertisement() = secagg::ToProto(advertisement);
    ASSIGN_OR_RETURN(const v1::SecAggResponse keys, step(request));
    if (restarted) return false;
    std::vector<secagg::KeyAdvertisement> advertisements;
    for (const v1::SecAggAdvertisement& a : keys.advertisements()) {
      ASSIGN_OR_RETURN(secagg::KeyAdvertisement ad, secagg::FromProto(a));
      advertisements.push_back(std::move(ad));
    }
    ASSIGN_OR_RETURN(const std::vector<secagg::SealedShares> shares, site.ShareKeys(advertisements));

    request.Clear();
    request.set_step(v1::SECAGG_STEP_SHARE);
    for (const secagg::SealedShares& s : shares) *request.add_shares() = secagg::ToProto(s);
    ASSIGN_OR_RETURN(const v1::SecAggResponse mine, step(request));
    if (restarted) return false;
    std::vector<secagg::SealedShares> received;
    for (const v1::SecAggSealedShares& s : mine.shares()) received.push_back(secagg::FromProto(s));
    RETURN_IF_ERROR(site.ReceiveShares(received));
    spdlog::info("round {}: secure aggregation: keys verified for {} sites; {} shares received", session.round,
                 advertisements.size(), received.size());
    CrashPoint("secagg-keys-exchanged");

    ASSIGN_OR_RETURN(const std::vector<uint64_t> masked, site.MaskInput(input));
    request.Clear();
    request.set_step(v1::SECAGG_STEP_MASKED_INPUT);
    *request.mutable_masked_input() = {masked.begin(), masked.end()};
    total_wire_bytes_ += static_cast<int64_t>(request.ByteSizeLong()) + 5;
    RETURN_IF_ERROR(step(request).status());
    if (restarted) return false;

    request.Clear();
    request.set_step(v1::SECAGG_STEP_UNMASK);
    ASSIGN_OR_RETURN(const v1::SecAggResponse unmask, step(request));
    if (restarted) return false;
    ASSIGN_OR_RETURN(const secagg::UnmaskResponse answer, site.Unmask(secagg::UnmaskRequestOf(unmask)));
    *request.mutable_unmask() = secagg::ToProto(answer);
    RETURN_IF_ERROR(step(request).status());
    return !restarted;
  }

  absl::StatusOr<std::reference_wrapper<SiteSession>> Session() {
    if (!site_.has_value()) {
      ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(*model_, samples_, local_));
      site_.emplace(std::move(site));
    }
    return std::ref(*site_);
  }

  // What a round's upload carried, for its summary line and the job's totals.
  struct UploadTally {
    int64_t tensors = 0;
    int64_t weights = 0;
    int64_t wire = 0;  // protobuf messages with their gRPC prefixes; no keepalives, no session token
    int payloads = 0;
  };

  // The round's uploader (client/upload_stream.h): it opens an UploadPayloads stream when the
  // first payload is handed to it and retries it like every call (Retrying, with a fresh
  // stream that re-sends the spool). A FAILED_PRECONDITION from the server marks the round as
  // gone. `payloads`: the decoder layers of the round.
  absl::StatusOr<std::unique_ptr<RoundUploader>> StartUpload(int round, int payloads) {
    RoundUploader::Options options;
    options.expected_payloads = payloads;
    const uint32_t idle_seconds = job_.upload_idle_timeout_seconds() == 0 ? 60 : job_.upload_idle_timeout_seconds();
    options.keepalive_interval = absl::Seconds(idle_seconds) / 3;
    options.stall_timeout = absl::Seconds(config_.rpc_timeout_seconds);
    // Both run on the uploader thread: they touch only the channel, the token and the retry
    // policy, which are shared with the heartbeat thread already.
    RoundUploader::StreamOpener open = [this, round]() -> absl::StatusOr<std::unique_ptr<UploadStream>> {
      return OpenGrpcUploadStream(Stub(), Token(), round);  // the token may have changed by a re-join
    };
    RoundUploader::RetryLoop retry = [this](const UploadAttempts& attempts) {
      RetryControl control;
      control.progressed = attempts.progressed;
      control.stop = attempts.abandoned;
      return Retrying<v1::UploadAck>(
          "UploadPayloads",
          [&]() -> absl::StatusOr<v1::UploadAck> {
            absl::StatusOr<v1::UploadAck> ack = attempts.run();
            // Refused as not open / closed / past the deadline: the round has gone on without
            // this upload.
            if (absl::IsFailedPrecondition(ack.status()) && !IsLocalUploadFailure(ack.status())) {
              return MarkRoundGone(ack.status());
            }
            return ack;
          },
          control);
    };
    return RoundUploader::Start(std::move(options), std::move(open), std::move(retry));
  }

  // Encodes one decoder layer's masks as one payload and hands its messages to `upload`.
  // Returns the payload's wire bytes.
  absl::StatusOr<int64_t> QueueLayer(const LayerMasks& masks, const JobTensorTable& table, RoundUploader& upload,
                                     UploadTally* tally) {
    const MaskPattern pattern{job_.pattern().n(), job_.pattern().m()};
    ASSIGN_OR_RETURN(EncodedPayload payload, EncodeMasks(masks, pattern, job_.max_chunk_bytes()));
    ASSIGN_OR_RETURN(const std::vector<v1::UploadChunk> messages, PayloadMessages(std::move(payload), table));
    int64_t wire = 0;
    for (const v1::UploadChunk& m : messages) wire += GrpcMessageBytes(m);
    RETURN_IF_ERROR(upload.AddPayload(messages));
    for (const auto& entry : masks) tally->weights += entry.second.numel();
    tally->tensors += static_cast<int64_t>(masks.size());
    tally->wire += wire;
    ++tally->payloads;
    return wire;
  }

  // After the round's last layer: the uploader drains what is left, closes the stream and
  // waits for the UploadAck.
  absl::Status FinishUpload(int round, RoundUploader& upload, const UploadTally& tally, double compute_seconds) {
    SetActivity(v1::SITE_ACTIVITY_UPLOADING, round);
    const auto start = Clock::now();
    ASSIGN_OR_RETURN(v1::UploadAck ack, upload.Finish());
    total_wire_bytes_ += tally.wire;
    ++rounds_uploaded_;
    spdlog::info("round {}: masks computed in {:.2f} s; uploaded {} tensors, {} weights, {} wire bytes "
                 "({:.4f} bits/weight) as {} payload(s) on {} stream(s), {} keepalive(s)",
                 round, compute_seconds, tally.tensors, tally.weights, tally.wire,
                 8.0 * tally.wire / std::max<int64_t>(1, tally.weights), tally.payloads, upload.attempts(),
                 upload.keepalives_sent());
    spdlog::info("round {}: upload {} {:.2f} s after the last layer ({} of the clients committed so far)", round,
                 ack.duplicate() ? "was already committed (duplicate)" : "committed",
                 std::chrono::duration<double>(Clock::now() - start).count(), ack.clients_committed());
    return absl::OkStatus();
  }

  absl::StatusOr<RoundDecision> Fetch(int round) {
    return Retrying<RoundDecision>("FetchDecisions", [&]() -> absl::StatusOr<RoundDecision> {
      v1::FetchRequest request;
      request.set_session_token(Token());
      request.set_round(round);
      auto context = Context(config_.rpc_timeout_seconds);
      const std::shared_ptr<v1::FedPrLLM::Stub> stub = Stub();  // outlives the stream
      std::unique_ptr<grpc::ClientReader<v1::DecisionChunk>> reader = stub->FetchDecisions(context.get(), request);
      std::vector<v1::DecisionChunk> stream;
      v1::DecisionChunk message;
      while (reader->Read(&message)) stream.push_back(message);
      RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
      absl::StatusOr<RoundDecision> decoded = DecodeDecisionStream(stream, round, job_, {round});
      // A decision that fails validation is corrupt in transit or a server bug: do not retry.
      if (!decoded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("decision of round ", round, ": ", decoded.status().message()));
      }
      return decoded;
    });
  }

  // Heartbeats (docs/round_protocol.md §8): a thread that reports the activity below every
  // heartbeat_seconds, and joins again if the server no longer knows this session.
  // The engine's per-batch callback, on the computing thread: the heartbeat carries where
  // the site is within the layer and the time it expects to need, and a progress line is
  // logged at most every progress_log_seconds. Propagation through earlier layers' decisions
  // (iterative rounds) is not part of the round's own computation.
  void OnBatch(const BatchProgress& p) {
    if (!progress_.has_value() || p.layer < progress_first_layer_) return;
    const bool due = progress_->Update(p, progress_first_layer_, absl::Now());
    {
      absl::MutexLock lock(&session_mu_);
      heartbeat_.set_batches_done(static_cast<int32_t>(p.batches_done));
      heartbeat_.set_batches_total(static_cast<int32_t>(p.batches_total));
      heartbeat_.set_eta_seconds(std::max(0.0, progress_->eta_seconds()));
    }
    if (due) spdlog::info("round {}: {}", progress_round_, progress_->Describe());
  }

  void SetActivity(v1::SiteActivity activity, int round, int layer = -1, int done = 0, int total = 0) {
    absl::MutexLock lock(&session_mu_);
    heartbeat_.set_batches_done(0);
    heartbeat_.set_batches_total(0);
    heartbeat_.set_eta_seconds(progress_.has_value() && activity == v1::SITE_ACTIVITY_CALIBRATING
                                   ? std::max(0.0, progress_->eta_seconds())
                                   : 0);
    heartbeat_.set_activity(activity);
    heartbeat_.set_round(round);
    heartbeat_.set_layer(layer);
    heartbeat_.set_layers_done(done);
    heartbeat_.set_layers_total(total);
  }

  void StartHeartbeats() {
    heartbeat_thread_ = std::thread([this] {
      const auto interval = absl::Milliseconds(static_cast<int64_t>(config_.heartbeat_seconds * 1000));
      absl::MutexLock lock(&stop_mu_);
      while (!stop_mu_.AwaitWithTimeout(absl::Condition(&stop_heartbeats_), interval)) {
        stop_mu_.Unlock();
        SendHeartbeat();
        stop_mu_.Lock();
      }
    });
  }

  void StopHeartbeats() {
    {
      absl::MutexLock lock(&stop_mu_);
      stop_heartbeats_ = true;
    }
    if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  }

  void SendHeartbeat() {
    v1::HeartbeatRequest request;
    {
      absl::MutexLock lock(&session_mu_);
      request = heartbeat_;
      request.set_session_token(token_);
    }
    if (request.activity() == v1::SITE_ACTIVITY_WAITING) return;  // the held long poll shows it
    v1::HeartbeatResponse response;
    auto context = Context(std::max(1.0, std::min(10.0, config_.heartbeat_seconds)));
    const absl::Status s = FromGrpcStatus(Stub()->Heartbeat(context.get(), request, &response));
    if (absl::IsUnauthenticated(s)) {
      spdlog::warn("heartbeat: session not recognized ({}); joining again", std::string(s.message()));
      if (absl::Status joined = Rejoin(request.session_token()); !joined.ok()) {
        spdlog::warn("heartbeat: joining again failed: {}", std::string(joined.message()));
      }
    }
  }

  grpc::ChannelArguments channel_args_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::shared_ptr<v1::FedPrLLM::Stub> stub_ ABSL_GUARDED_BY(session_mu_);
  std::unique_ptr<UnavailableDiagnosis> diagnosis_;  // TLS only; set by Connect()
  const ClientConfig& config_;
  const LocalPruneOptions local_base_;
  std::map<std::string, std::unique_ptr<LocalModel>> models_;  // by path
  // The job being worked on.
  const LlamaModel* model_ = nullptr;
  at::Tensor samples_;
  LocalPruneOptions local_;
  std::string fingerprint_;
  std::string job_name_;
  std::string offered_job_id_;
  std::optional<RoundProgress> progress_;  // while computing a round
  int progress_round_ = -1;
  int64_t progress_first_layer_ = 0;
  const std::string instance_id_ = RandomHex(8);
  absl::Mutex rejoin_mu_;  // serializes Rejoin; taken before session_mu_
  absl::Mutex session_mu_;
  std::string token_ ABSL_GUARDED_BY(session_mu_);
  v1::HeartbeatRequest heartbeat_ ABSL_GUARDED_BY(session_mu_);
  absl::Mutex stop_mu_;
  bool stop_heartbeats_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread heartbeat_thread_;
  std::string job_id_;
  v1::JobSpec job_;
  std::optional<SiteSession> site_;
  int64_t total_wire_bytes_ = 0;
  int rounds_uploaded_ = 0;
};

absl::StatusOr<ComputeOptions> ParseCompute(const ClientConfig& config) {
  absl::StatusOr<ComputeOptions> options = ParseComputeOptions(config.device, config.dtype);
  if (!options.ok()) {
    return absl::Status(options.status().code(), absl::StrCat("config keys 'device'/'dtype': ", options.status().message()));
  }
  return options;
}

}  // namespace

absl::Status RunClient(const ClientConfig& config) {
  LocalPruneOptions local;
  ASSIGN_OR_RETURN(local.compute, ParseCompute(config));
  spdlog::info("computing on {}", DescribeDevice(local.compute, config.device));
  ASSIGN_OR_RETURN(local.metric, ParsePruneMetric(config.metric));
  ASSIGN_OR_RETURN(local.group, ParseComparisonGroup(config.local_group));
  local.batch_size = config.batch_size;
  local.activations_on_host = config.activations_on_host;
  // Before minutes of model loading: a certificate that cannot work fails now.
  if (!config.insecure) {
    RETURN_IF_ERROR(CheckKeyPair(TlsFiles{config.tls.cert, config.tls.key, config.tls.ca}, TlsRole::kClient));
  }
  FederationClient client(config, local);
  RETURN_IF_ERROR(client.Preload());
  RETURN_IF_ERROR(client.Connect());
  return client.Serve();
}

}  // namespace fedprllm
