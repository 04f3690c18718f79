// The server's mutual-TLS credentials, whose certificate, key and CA bundle can be replaced
// while it serves (on SIGHUP): new connections present the new certificate and verify
// clients against the new CA bundle; open connections keep their session.
//
//   ASSIGN_OR_RETURN(auto tls, RotatingServerCredentials::Create(files));
//   builder.AddListeningPort(address, tls->credentials(), &port);
//   ...
//   absl::StatusOr<std::string> rotated = tls->Rotate(files);   // on SIGHUP
//
// The credentials watch a private copy of the files (a 0700 directory under the system's
// temporary directory, removed by the destructor): Rotate checks the new files as the
// startup does (CheckKeyPair), then publishes them to that copy with one atomic rename,
// and gRPC's file watcher picks them up within kRefreshSeconds. Files that fail the check
// are never published: the server keeps presenting its previous certificate.
#pragma once

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tls/key_pair_check.h"

namespace fedprllm {

class RotatingServerCredentials {
 public:
  // How often gRPC rereads the published copy.
  static constexpr unsigned kRefreshSeconds = 1;

  // Checks `files` for the server role (CheckKeyPair's errors) and publishes them. Requests
  // and verifies a client certificate on every connection.
  static absl::StatusOr<std::unique_ptr<RotatingServerCredentials>> Create(const TlsFiles& files);
  ~RotatingServerCredentials();
  RotatingServerCredentials(const RotatingServerCredentials&) = delete;
  RotatingServerCredentials& operator=(const RotatingServerCredentials&) = delete;

  const std::shared_ptr<grpc::ServerCredentials>& credentials() const { return credentials_; }

  // Checks and publishes `files`. Returns what was published ("certificate CN=server serial
  // 1A2B, valid until 2027-12-01 00:00:00 UTC; CA bundle unchanged"), or the check's error,
  // in which case nothing changed. Not thread-safe: one caller (the signal thread).
  absl::StatusOr<std::string> Rotate(const TlsFiles& files);

  // The certificate currently published, PEM.
  const std::string& published_certificate() const { return published_cert_; }
  // The private copy's directory.
  const std::string& directory() const { return dir_; }

 private:
  explicit RotatingServerCredentials(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Publish(const std::string& cert, const std::string& key, const std::string& ca);

  std::string dir_;  // holds `live` (a symlink to the published generation) and generations
  int generation_ = 0;
  std::string published_cert_;
  std::string published_ca_;
  std::shared_ptr<grpc::ServerCredentials> credentials_;
};

}  // namespace fedprllm
