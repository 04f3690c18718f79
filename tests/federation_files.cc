// Certificates, shards, configs and daemon processes for the end-to-end tests.
#include "tests/federation_files.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/calibration_data.h"

namespace fedprllm::e2e {

const std::string kModel = std::string(FEDPRLLM_SOURCE_DIR) + "/models/stories260K/stories260K.bin";
const std::string kTokenizer = std::string(FEDPRLLM_SOURCE_DIR) + "/models/stories260K/tok512.model";
const std::vector<std::string> kSites = {"site-a", "site-b", "site-c"};

std::unique_ptr<FederationFiles> FederationFiles::Make() {
  auto files = std::unique_ptr<FederationFiles>(new FederationFiles());
  char tmpl[] = "/tmp/fedprllm-e2e-XXXXXX";
  files->dir_ = ::mkdtemp(tmpl);
  const std::string cmd = absl::StrCat("bash ", FEDPRLLM_MAKE_CERTS, " ", files->Certs(),
                                       " --rogue mallory site-a site-b site-c site-d site-e operator monitor > ", files->dir_,
                                       "/make_certs.log 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    files->error_ = "make_certs.sh failed: " + ReadAll(files->dir_ + "/make_certs.log");
    return files;
  }
  const std::string text = ReadAll(std::string(FEDPRLLM_SOURCE_DIR) + "/../shared/data/tinystories/tinystories_val.txt");
  if (text.size() <= 100000) {
    files->error_ = "shared TinyStories data missing";
    return files;
  }
  const std::string second = SplitHalves(text).second;
  const size_t shard = 16000;
  for (size_t i = 0; i < kSites.size(); ++i) WriteAll(files->Shard(kSites[i]), second.substr(i * shard, shard));
  return files;
}

std::string FederationFiles::WriteServerConfig(const std::string& name, const RunSettings& s, int port,
                                               const std::string& extra) const {
  const std::string run = dir_ + "/" + name;
  std::filesystem::create_directories(run);
  WriteAll(run + "/server.yaml",
           absl::StrCat("listen_address: \"127.0.0.1:", port, "\"\n", "tls: {cert: ", Certs(), "/server.crt, key: ",
                        Certs(), "/server.key, ca: ", Certs(), "/ca.crt}\n", "model: ", kModel, "\noutput_dir: ", run,
                        "/out\nstate_dir: ", run, "/state\n", "strategy: ", s.strategy, "\ngroup: ", s.group,
                        "\npattern: \"", s.pattern, "\"\n", "weight_scaling: ", s.weight_scaling ? "true" : "false",
                        "\n", "round_deadline_seconds: 120\npoll_window_seconds: 5\nexit_when_idle: true\n",
                        extra.find("allowed_clients") == std::string::npos ? "allowed_clients: [site-a, site-b, site-c]\n"
                                                                           : "",
                        extra));
  return run;
}

std::string FederationFiles::WriteClientConfig(const std::string& run, const std::string& site, int port,
                                               const std::string& cert_dir, const std::string& model,
                                               const std::string& shard_site, double retry_max_seconds,
                                               const std::string& extra) const {
  const std::string path = absl::StrCat(run, "/", site, ".yaml");
  WriteAll(path, absl::StrCat("server_address: \"127.0.0.1:", port, "\"\n", "tls: {cert: ", cert_dir, "/", site,
                              ".crt, key: ", cert_dir, "/", site, ".key, ca: ", Certs(), "/ca.crt}\n", "name: ", site,
                              "\nmodel: ", model, "\ntokenizer: ", kTokenizer, "\n", "calibration: [",
                              Shard(shard_site.empty() ? site : shard_site), "]\n", "nsamples: ", kNsamples,
                              "\nseqlen: ", kSeqlen, "\nseed: 0\n",
                              "device: cpu\n",  // the in-process reference runs on the CPU
                              "retry_initial_seconds: 0.2\nretry_max_seconds: ", retry_max_seconds, "\n",
                              extra.find("exit_after_jobs") == std::string::npos ? "exit_after_jobs: 1\n" : "", extra));
  return path;
}

std::unique_ptr<ChildProcess> StartServer(const std::string& run, int port, const std::vector<std::string>& env) {
  auto server = std::make_unique<ChildProcess>(
      std::vector<std::string>{FEDPRLLM_SERVER_BIN, "--config", run + "/server.yaml"}, run + "/server.log", env);
  WaitUntilListening(*server, port, 60);
  return server;
}

std::unique_ptr<ChildProcess> StartClient(const std::string& config, const std::string& log,
                                          const std::vector<std::string>& env) {
  return std::make_unique<ChildProcess>(std::vector<std::string>{FEDPRLLM_CLIENT_BIN, "--config", config}, log, env);
}

}  // namespace fedprllm::e2e
