// ClientConfig: everything fedprllm-client reads from its YAML file (deploy/client.example.yaml
// lists every key with its default). One struct, one loader, one Validate() whose errors name
// the offending key.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedprllm {

struct ClientTlsConfig {
  // PEM files: this site's certificate (CN = its identity) and key, and the federation CA that
  // signed the server's certificate. Required unless `insecure`.
  std::string cert;
  std::string key;
  std::string ca;
};

struct ClientConfig {
  // host:port of fedprllm-server. Required.
  std::string server_address;
  ClientTlsConfig tls;
  // Name the server's certificate must carry, when it differs from the host in
  // server_address (e.g. connecting by IP). Default "" = the host.
  std::string server_name;
  // Plaintext, no authentication (test setups only; the server must be insecure too).
  // Default false.
  bool insecure = false;
  // Shown in the server's logs; in insecure mode it is the identity. Default "".
  std::string name;
  // Local copy of the base model (must have the server's fingerprint). Used for every job
  // whose model_name is not in `models`. Default "" (then `models` is required).
  std::string model;
  // SentencePiece file of `model`. Default "" = found beside the model.
  std::string tokenizer;
  // The models this site has, by the name jobs give them (a job YAML's model_name) ->
  // local path (Hugging Face directory or llama2.c .bin; its tokenizer is found beside it).
  // A job naming a model the site has neither here nor as `model` is declined, with the
  // reason shown in the job's status. Default {}.
  std::map<std::string, std::string> models;
  // Exit after taking part in this many jobs (done, failed or declined); the exit status
  // is the last job's. Default 0 = a daemon that stays up between jobs. Bounds 0..1000000.
  int exit_after_jobs = 0;
  // Private calibration data, all text or all token ids (docs/calibration_data.md):
  // "file.txt", "file.jsonl:field1+field2" (string fields, or lists of ids such as
  // "file.jsonl:input_ids"), "file.npy", "file.bin:uint16" / ":uint32". 1..64 entries.
  std::vector<std::string> calibration;
  // Calibration windows. Default 128. Bounds 1..1000000.
  int64_t nsamples = 128;
  // Tokens per window. Default 256. Bounds 2..131072, and at most the model's
  // max_position_embeddings (checked when the model is loaded).
  int64_t seqlen = 256;
  // Seed of the window positions. Default 0.
  uint64_t seed = 0;
  // "auto" (cuda:0 when LibTorch has CUDA and a device is visible, else cpu), "cpu", "cuda"
  // (cuda:0) or "cuda:N". The client logs what it chose and why. Default "auto".
  std::string device = "auto";
  // Compute dtype "float32" | "bfloat16" | "float16"; "" = the model's (on the CPU, float32
  // for a float16 or bfloat16 model). Default "".
  std::string dtype;
  // Calibration windows per forward pass. Default 8. Bounds 1..4096.
  int64_t batch_size = 8;
  // Keep the calibration activations (nsamples x seqlen x hidden, in the compute dtype) in
  // host memory and move one batch at a time to the device, for a GPU whose memory holds a
  // decoder layer but not the activations too. Default false (on the device).
  bool activations_on_host = false;
  // Local scoring: "wanda" | "magnitude". Default "wanda".
  std::string metric = "wanda";
  // Comparison group of the site's own masks: "row" (Wanda's) | "layer". Default "row".
  std::string local_group = "row";
  // First retry delay after a transient failure, seconds; doubles up to 60, +-20% jitter.
  // Default 1. Bounds 0.01..60.
  double retry_initial_seconds = 1.0;
  // Give up after this long of consecutive transient failures (server down, network
  // broken), seconds. Default 3600. Bounds 1..604800.
  double retry_max_seconds = 3600;
  // Interval of the heartbeats that tell the server this site is alive and what it is
  // doing, seconds. Default 10. Bounds 0.1..3600.
  double heartbeat_seconds = 10;
  // Deadline of one upload or fetch RPC, seconds. Default 600. Bounds 1..86400.
  double rpc_timeout_seconds = 600;
  // At most one progress line per this many seconds while computing a round (batches done,
  // time left). Default 10. Bounds 0.1..3600.
  double progress_log_seconds = 10;
  // "text" | "json" (one JSON object per line). Default "text".
  std::string log_format = "text";

  absl::Status Validate();
};

absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path);
absl::StatusOr<ClientConfig> ParseClientConfig(const std::string& yaml_text, const std::string& source);

}  // namespace fedprllm
