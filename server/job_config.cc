// Job YAML: its key table, and the overlay of a job's keys on the server's config.
#include "server/job_config.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "config/yaml_config.h"

namespace fedprllm {
namespace {

// A job file's keys: the pruning job's, its name and its sites.
std::map<std::string, YamlSetter> JobSetters(ServerConfig* c) {
  std::map<std::string, YamlSetter> setters = PruningJobSetters(c);
  setters.insert({{"name", StoreIn(&c->job_name)}, {"sites", StoreIn(&c->allowed_clients)}});
  return setters;
}

}  // namespace

absl::StatusOr<JobDefinition> ParseJobYaml(const std::string& yaml_text, const std::string& source,
                                           const ServerConfig& server) {
  if (server.jobs_dir.empty()) {
    return absl::FailedPreconditionError("this server takes no submitted jobs: its config has no jobs_dir");
  }
  // The server's own keys, and every job key at its default.
  ServerConfig job;
  job.listen_address = server.listen_address;
  job.tls = server.tls;
  job.insecure = server.insecure;
  job.allowed_clients = server.allowed_clients;
  job.jobs_dir = server.jobs_dir;
  job.poll_window_seconds = server.poll_window_seconds;
  job.site_timeout_seconds = server.site_timeout_seconds;
  job.resume_grace_seconds = server.resume_grace_seconds;
  job.max_chunk_bytes = server.max_chunk_bytes;
  job.upload_idle_timeout_seconds = server.upload_idle_timeout_seconds;
  job.transport_memory_bytes = server.transport_memory_bytes;
  job.job_name.clear();
  RETURN_IF_ERROR(ApplyYamlConfig(yaml_text, source, JobSetters(&job), "deploy/job.example.yaml"));
  auto refuse = [&](const absl::Status& s) { return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message())); };
  if (job.job_name.empty()) return refuse(ConfigKeyError("name", "is required"));
  if (job.model.empty()) return refuse(ConfigKeyError("model", "is required"));
  if (job.allowed_clients.empty()) job.allowed_clients = server.allowed_clients;  // sites: [] = all
  const std::set<std::string> allowed(server.allowed_clients.begin(), server.allowed_clients.end());
  for (const std::string& site : job.allowed_clients) {
    if (allowed.count(site) == 0) {
      return refuse(ConfigKeyError("sites", absl::StrCat("\"", site, "\" is not in the server's allowed_clients")));
    }
  }
  const std::string dir = absl::StrCat(server.jobs_dir, "/", job.job_name);
  job.state_dir = dir + "/state";
  if (job.output_dir.empty()) job.output_dir = dir + "/output";
  if (absl::Status s = job.Validate(); !s.ok()) {
    // Validate() names the server config's key for the sites; the job calls them `sites`.
    std::string message(s.message());
    if (const size_t at = message.find("'allowed_clients'"); at != std::string::npos) message.replace(at, 17, "'sites'");
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
  }
  return JobDefinition{job.job_name, yaml_text, std::move(job)};
}

JobDefinition OwnJob(const ServerConfig& server) { return JobDefinition{server.job_name, "", server}; }

}  // namespace fedprllm
