// RotatingServerCredentials: gRPC's TLS credentials over a file watcher, fed from a private
// copy of the server's files that Rotate replaces with one rename.
#include "tls/rotating_server_credentials.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tls/certificate_check.h"
#include "tls/revocation_list.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::NotFoundError(absl::StrCat("config key '", key, "': cannot read ", path));
  }
  return text.str();
}

// Writes `bytes` to a new file readable by this user only.
absl::Status WritePrivateFile(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
    }
    written += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

std::string Describe(const std::string& cert_pem, const std::string& cert_path) {
  absl::StatusOr<std::vector<CertificateSummary>> summaries = ReadCertificateSummaries(cert_path, "tls.cert");
  const std::string subject = summaries.ok() && !summaries->empty() ? summaries->front().subject : "?";
  return absl::StrCat("certificate ", subject, " serial ", CertificateSerialHex(cert_pem), ", valid until ",
                      FormatUtc(CertificateNotAfter(cert_pem)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RotatingServerCredentials>> RotatingServerCredentials::Create(const TlsFiles& files) {
  RETURN_IF_ERROR(CheckKeyPair(files, TlsRole::kServer));
  std::error_code error;
  const fs::path temp = fs::temp_directory_path(error);
  if (error) return absl::InternalError(absl::StrCat("no temporary directory for the TLS files: ", error.message()));
  std::string pattern = (temp / "fedprllm-server-tls.XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", pattern, ": ", std::strerror(errno)));
  }
  std::unique_ptr<RotatingServerCredentials> tls(new RotatingServerCredentials(pattern));
  ASSIGN_OR_RETURN(std::string cert, ReadPem(files.cert, "tls.cert"));
  ASSIGN_OR_RETURN(std::string key, ReadPem(files.key, "tls.key"));
  ASSIGN_OR_RETURN(std::string ca, ReadPem(files.ca, "tls.ca"));
  RETURN_IF_ERROR(tls->Publish(cert, key, ca));

  const std::string live = tls->dir_ + "/live/";
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      live + "key.pem", live + "cert.pem", live + "ca.pem", kRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls->credentials_ = grpc::experimental::TlsServerCredentials(options);
  if (tls->credentials_ == nullptr) return absl::InternalError("gRPC refused the TLS server credentials");
  return tls;
}

RotatingServerCredentials::~RotatingServerCredentials() {
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

absl::Status RotatingServerCredentials::Publish(const std::string& cert, const std::string& key,
                                                const std::string& ca) {
  const std::string name = absl::StrCat("gen-", ++generation_);
  const std::string gen = absl::StrCat(dir_, "/", name);
  if (::mkdir(gen.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("cannot create ", gen, ": ", std::strerror(errno)));
  }
  RETURN_IF_ERROR(WritePrivateFile(gen + "/key.pem", key));
  RETURN_IF_ERROR(WritePrivateFile(gen + "/cert.pem", cert));
  RETURN_IF_ERROR(WritePrivateFile(gen + "/ca.pem", ca));
  // `live` flips from the old generation to the new one in one rename, so the watcher
  // never reads a key of one generation with a certificate of another.
  const std::string next = dir_ + "/live.next";
  std::error_code error;
  fs::remove(next, error);
  fs::create_directory_symlink(name, next, error);
  if (!error) fs::rename(next, dir_ + "/live", error);
  if (error) return absl::InternalError(absl::StrCat("cannot publish the TLS files in ", dir_, ": ", error.message()));
  // The generation before the previous one is no longer read by anyone.
  if (generation_ > 2) fs::remove_all(absl::StrCat(dir_, "/gen-", generation_ - 2), error);
  published_cert_ = cert;
  published_ca_ = ca;
  return absl::OkStatus();
}

absl::StatusOr<std::string> RotatingServerCredentials::Rotate(const TlsFiles& files) {
  RETURN_IF_ERROR(CheckKeyPair(files, TlsRole::kServer));
  ASSIGN_OR_RETURN(std::string cert, ReadPem(files.cert, "tls.cert"));
  ASSIGN_OR_RETURN(std::string key, ReadPem(files.key, "tls.key"));
  ASSIGN_OR_RETURN(std::string ca, ReadPem(files.ca, "tls.ca"));
  const bool same_cert = cert == published_cert_;
  const bool same_ca = ca == published_ca_;
  if (!same_cert || !same_ca) RETURN_IF_ERROR(Publish(cert, key, ca));
  return absl::StrCat(same_cert ? "unchanged " : "now ", Describe(cert, files.cert), "; CA bundle ",
                      same_ca ? "unchanged" : "replaced");
}

}  // namespace fedprllm
