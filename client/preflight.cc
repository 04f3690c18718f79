// The checks of `fedprllm-client check`: config, certificate, server, models, calibration.
#include "client/preflight.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "engine/calibration_data.h"
#include "model/model_and_tokenizer.h"
#include "model/model_summary.h"
#include "model/perplexity.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/payload_convert.h"
#include "tls/server_probe.h"

namespace fedprllm {

namespace {

constexpr char kServer[] = "server";
constexpr char kCalibration[] = "calibration";

// What was learned from one model file; the model itself is dropped once described, so
// that a site with several large models does not hold them all at once.
struct LoadedModel {
  absl::Status status;
  std::string text;  // shape and fingerprint
  std::optional<Tokenizer> tokenizer;
  int64_t vocab_size = 0;  // the bound of token-id calibration sources
};

// Loads the model at `path`; a config seqlen above its max_position_embeddings fails its line.
LoadedModel LoadAndDescribe(const std::string& path, const std::string& tokenizer_path, int64_t seqlen) {
  LoadedModel out;
  absl::StatusOr<ModelAndTokenizer> loaded = LoadModelAndTokenizer(path, tokenizer_path);
  if (!loaded.ok()) {
    out.status = loaded.status();
    return out;
  }
  out.text = absl::StrCat(path, ": ", DescribeModelShape(loaded->model), "; tokenizer ", loaded->tokenizer.path(),
                          "; fingerprint ", loaded->model.Fingerprint());
  out.status = CheckSeqlenFitsModel("config key 'seqlen':", seqlen, loaded->model.config());
  if (!out.status.ok()) out.status = absl::InvalidArgumentError(absl::StrCat(out.status.message(), " (", out.text, ")"));
  out.vocab_size = loaded->model.config().vocab_size;
  out.tokenizer.emplace(std::move(loaded->tokenizer));
  return out;
}

// "localhost:50051" or "10.0.0.5:50051 (as fedprllm.example.org)".
std::string ServerLabel(const ClientConfig& config) {
  if (config.server_name.empty()) return config.server_address;
  return absl::StrCat(config.server_address, " (as ", config.server_name, ")");
}

absl::StatusOr<v1::WhoAmIResponse> CallWhoAmI(const ClientConfig& config, absl::Duration timeout) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (config.insecure) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions options;
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadTextFile(config.tls.ca));
    ASSIGN_OR_RETURN(options.pem_private_key, ReadTextFile(config.tls.key));
    ASSIGN_OR_RETURN(options.pem_cert_chain, ReadTextFile(config.tls.cert));
    credentials = grpc::SslCredentials(options);
    if (!config.server_name.empty()) args.SetSslTargetNameOverride(config.server_name);
  }
  std::unique_ptr<v1::FedPrLLM::Stub> stub =
      v1::FedPrLLM::NewStub(grpc::CreateCustomChannel(config.server_address, credentials, args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  v1::WhoAmIResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub->WhoAmI(&context, v1::WhoAmIRequest(), &response)));
  return response;
}

// The "server" line. `identity`: this site's certificate name ("" in insecure mode: then
// `name` is the identity).
void CheckServer(const ClientConfig& config, const std::string& identity, const ClientPreflightOptions& options,
                 CheckReport* report) {
  const std::string label = ServerLabel(config);
  const std::string me = config.insecure ? config.name : identity;
  if (!config.insecure) {
    const TlsFiles files{config.tls.cert, config.tls.key, config.tls.ca};
    if (absl::Status probe = ProbeServer(config.server_address, config.server_name, files, options.server_timeout);
        !probe.ok()) {
      report->Fail(kServer, probe.message());  // it names the server
      return;
    }
  }
  absl::StatusOr<v1::WhoAmIResponse> who = CallWhoAmI(config, options.server_timeout);
  if (!who.ok()) {
    switch (who.status().code()) {
      case absl::StatusCode::kPermissionDenied:
        report->Fail(kServer, absl::StrCat(label, " refuses this site's identity ", me,
                                           ": it is not on the server's allowed_clients (server said: ",
                                           who.status().message(), ")"));
        return;
      case absl::StatusCode::kUnimplemented:
        report->Warn(kServer, absl::StrCat(label, config.insecure ? " answered" : " accepted this site's TLS handshake",
                                           " but does not implement WhoAmI (a fedprllm-server older than 0.4.0?), so "
                                           "whether ",
                                           me, " is on its allowed_clients is not known"));
        return;
      default:
        report->Fail(kServer,
                     absl::StrCat("WhoAmI to ", label, " failed: ", absl::StatusCodeToString(who.status().code()), ": ",
                                  who.status().message()));
        return;
    }
  }
  if (who->role() != "site") {
    report->Fail(kServer, absl::StrCat(label, " knows this certificate as ", who->identity(), " with role ",
                                       who->role().empty() ? "(none)" : who->role(),
                                       ", not as a site: a site's certificate must carry a name on the "
                                       "server's allowed_clients"));
    return;
  }
  // Without TLS the server has no identity to tell; the site's is its `name`.
  const std::string as = who->identity().empty() ? me : who->identity();
  report->Ok(kServer, absl::StrCat(label, " accepts this site as ", as, " (role ", who->role(), ", server ",
                                   who->server_version().empty() ? "?" : who->server_version(), ")",
                                   config.insecure ? "; PLAINTEXT (insecure: true)" : ""));
}

// The "calibration" line for one tokenizer and vocabulary size.
void CheckTokens(const ClientConfig& config, const std::vector<CalibrationSource>& sources, const Tokenizer& tokenizer,
                 int64_t vocab_size, CheckReport* report) {
  absl::StatusOr<std::vector<int>> tokens = TokenizeCalibrationSources(tokenizer, sources, {vocab_size, nullptr});
  if (!tokens.ok()) {
    report->Fail(kCalibration, tokens.status().message());
    return;
  }
  const int64_t have = static_cast<int64_t>(tokens->size());
  // SampleWindows draws each window at a random start in [0, tokens - seqlen], so it needs
  // seqlen + 1 tokens; windows may overlap. nsamples x seqlen is what independent windows take.
  const int64_t minimum = config.seqlen + 1;
  const int64_t independent = config.nsamples * config.seqlen;
  const std::string have_text =
      absl::StrCat(have, " tokens from ", sources.size(), sources.size() == 1 ? " source" : " sources", " (tokenizer ",
                   tokenizer.path(), ")");
  const std::string need_text =
      absl::StrCat("nsamples x seqlen = ", config.nsamples, " x ", config.seqlen, " = ", independent);
  if (have < minimum) {
    report->Fail(kCalibration, absl::StrCat(have_text, ": too few tokens for even one window of seqlen ", config.seqlen,
                                            ", which needs at least ", minimum, " tokens (", need_text,
                                            " for windows that do not overlap)"));
  } else if (have < independent) {
    report->Warn(kCalibration, absl::StrCat(have_text, ", fewer than ", need_text,
                                            ": the windows will overlap and repeat text (sampling needs at least ",
                                            minimum, " tokens); more calibration text gives independent windows"));
  } else {
    report->Ok(kCalibration, absl::StrCat(have_text, ", need ", need_text));
  }
}

}  // namespace

bool RunClientPreflight(const std::string& config_path, const ClientPreflightOptions& options, CheckReport* report) {
  if (config_path.empty()) {
    report->Fail("config", "--config is required");
    return false;
  }
  absl::StatusOr<ClientConfig> config = LoadClientConfig(config_path);
  if (config.ok() && !options.server_address.empty()) {
    config->server_address = options.server_address;
    if (absl::Status s = config->Validate(); !s.ok()) config = s;
  }
  if (!config.ok()) {
    report->Fail("config", config.status().message());
    return false;
  }
  report->Ok("config", absl::StrCat(config_path, config->name.empty() ? "" : absl::StrCat(" (site ", config->name, ")"),
                                    "; server ", config->server_address));
  return RunClientChecks(*config, options, report);
}

bool RunClientChecks(const ClientConfig& config, const ClientPreflightOptions& options, CheckReport* report) {
  const absl::Time now = options.now == absl::InfinitePast() ? absl::Now() : options.now;

  std::string identity;
  if (config.insecure) {
    report->Skip("certificate", absl::StrCat("insecure: true: no TLS; the identity is name '", config.name, "'"));
  } else {
    identity = ReportCertificateCheck(TlsFiles{config.tls.cert, config.tls.key, config.tls.ca}, TlsRole::kClient,
                                      report, now, options.certificate_warning);
  }

  if (config.insecure || !identity.empty()) {
    CheckServer(config, identity, options, report);
  } else {
    report->Skip(kServer, absl::StrCat(ServerLabel(config), " not contacted: the certificate check failed"));
  }

  // `model` first, then `models` by name; each file is loaded once.
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> wanted;  // line name -> path, tokenizer
  if (!config.model.empty()) wanted.push_back({"model", {config.model, config.tokenizer}});
  for (const auto& [name, path] : config.models) wanted.push_back({absl::StrCat("model ", name), {path, ""}});
  std::map<std::pair<std::string, std::string>, LoadedModel> loaded;
  // Tokenizers with distinct contents (and vocabulary sizes), in order: copies of one file
  // count the same tokens.
  std::vector<std::pair<const Tokenizer*, int64_t>> tokenizers;
  std::set<std::pair<std::string, int64_t>> tokenizer_contents;
  for (const auto& [line, key] : wanted) {
    auto it = loaded.find(key);
    if (it == loaded.end()) {
      it = loaded.emplace(key, LoadAndDescribe(key.first, key.second, config.seqlen)).first;
      if (const std::optional<Tokenizer>& t = it->second.tokenizer; t.has_value()) {
        absl::StatusOr<std::string> bytes = ReadTextFile(t->path());
        if (tokenizer_contents.insert({bytes.ok() ? *bytes : t->path(), it->second.vocab_size}).second) {
          tokenizers.push_back({&*t, it->second.vocab_size});
        }
      }
    }
    if (it->second.status.ok()) {
      report->Ok(line, it->second.text);
    } else {
      report->Fail(line, it->second.status.message());
    }
  }

  std::vector<CalibrationSource> sources;
  for (const std::string& spec : config.calibration) {
    absl::StatusOr<CalibrationSource> source = ParseCalibrationSource(spec);
    if (!source.ok()) {
      report->Fail(kCalibration, absl::StrCat("config key 'calibration': ", source.status().message()));
      return report->passed();
    }
    sources.push_back(*std::move(source));
  }
  if (tokenizers.empty()) {
    // No model to bound token ids: they are read (headers, sizes, JSON) but their range is
    // only checked to fit an int.
    absl::StatusOr<CalibrationData> data =
        ReadCalibrationData(sources, {std::numeric_limits<int>::max(), nullptr});
    if (!data.ok()) {
      report->Fail(kCalibration, data.status().message());
    } else {
      report->Skip(kCalibration,
                   absl::StrCat(data->is_tokens ? absl::StrCat(data->tokens.size(), " token ids")
                                                : absl::StrCat(data->text.size(), " bytes"),
                                " read from ", sources.size(), sources.size() == 1 ? " source" : " sources",
                                data->is_tokens ? "; ids not checked against a vocabulary: no model loaded"
                                                : "; tokens not counted: no model and tokenizer loaded"));
    }
    return report->passed();
  }
  for (const auto& [tokenizer, vocab_size] : tokenizers) CheckTokens(config, sources, *tokenizer, vocab_size, report);
  return report->passed();
}

}  // namespace fedprllm
