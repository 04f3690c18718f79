// The files of a three-site federation on loopback, shared by the end-to-end tests: the
// bundled model, certificates made by deploy/make_certs.sh (CA, server, site-a..site-e, an
// "operator", a "monitor", a rogue "mallory" from another CA), one calibration shard per
// site, and server and client configs for a run. Also starts fedprllm-server and fedprllm-client processes.
//
//   auto files = FederationFiles::Make();                  // ASSERT files->ok()
//   const std::string run = files->WriteServerConfig("oneshot", {}, port);
//   auto server = StartServer(run, port);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/e2e_harness.h"

namespace fedprllm::e2e {

extern const std::string kModel;      // models/stories260K/stories260K.bin
extern const std::string kTokenizer;  // its tok512.model
constexpr int64_t kNsamples = 8;
constexpr int64_t kSeqlen = 64;
extern const std::vector<std::string> kSites;  // site-a, site-b, site-c

struct RunSettings {
  std::string strategy = "one-shot";
  std::string group = "layer";
  std::string pattern = "unstructured";
  bool weight_scaling = false;
};

class FederationFiles {
 public:
  // Makes the certificates and the shards (disjoint 16,000-byte slices of the second half of
  // ../shared/data/tinystories/tinystories_val.txt) in a new temporary directory.
  static std::unique_ptr<FederationFiles> Make();
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }

  std::string Certs() const { return dir_ + "/certs"; }
  std::string Shard(const std::string& site) const { return dir_ + "/" + site + ".txt"; }

  // A fresh run directory `name` with server.yaml (output in run/out, state in run/state,
  // round deadline 120 s, poll window 5 s); `extra` lines are appended, and the allowlist
  // defaults to the three sites unless `extra` sets allowed_clients. Returns the directory.
  std::string WriteServerConfig(const std::string& name, const RunSettings& settings, int port,
                                const std::string& extra = "") const;
  // run/<site>.yaml for `site` with the certificate in `cert_dir`, calibrating on the shard of
  // `shard_site` (default: its own) on the CPU; retries start at 0.2 s and give up after
  // `retry_max_seconds`; `extra` lines are appended. Returns the path.
  std::string WriteClientConfig(const std::string& run, const std::string& site, int port, const std::string& cert_dir,
                                const std::string& model = kModel, const std::string& shard_site = "",
                                double retry_max_seconds = 3, const std::string& extra = "") const;

 private:
  std::string dir_;
  std::string error_;
};

// fedprllm-server on run/server.yaml, logging to run/server.log; returns once the port
// accepts connections or the process exited (at most 60 s). `env` adds "NAME=value"s.
std::unique_ptr<ChildProcess> StartServer(const std::string& run, int port, const std::vector<std::string>& env = {});
// fedprllm-client on `config`, logging to `log`.
std::unique_ptr<ChildProcess> StartClient(const std::string& config, const std::string& log,
                                          const std::vector<std::string>& env = {});

}  // namespace fedprllm::e2e
