// SiteRegistry: the server's view of every allowlisted site (session token, whether it takes
// part in the job, what it is doing, when it was last heard from) and the liveness rules of
// docs/round_protocol.md §8. Not thread-safe: FederationJob calls it under its own lock.
//
//   SiteRegistry sites(config.allowed_clients, 1000 * config.site_timeout_seconds);
//   ASSIGN_OR_RETURN(std::string token, sites.StartSession("site-a", now));
//   ASSIGN_OR_RETURN(std::string site, sites.Authenticate(token, peer, now));
//   for (const std::string& lost : sites.DeclareLost(now)) spdlog::warn("site {} lost", lost);
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "proto/fedprllm.pb.h"

namespace fedprllm {

class SiteRegistry {
 public:
  struct Site {
    std::string token;         // current session; "" when none (never joined, or lost)
    std::string instance;      // JoinRequest.instance_id of the session's process
    bool participant = false;  // has joined this job, in this process or before a restart
    bool lost = false;         // silent past the site timeout; cleared by the next Join
    int64_t last_seen_ms = 0;  // last RPC, heartbeat or held poll
    int64_t lost_ms = 0;
    int held_polls = 0;        // long polls the server holds for it right now
    bool disconnected = false; // its last poll or upload stream was cancelled, nothing since
    v1::SiteActivity activity = v1::SITE_ACTIVITY_UNSPECIFIED;
    int round = -1, layer = -1, layers_done = 0, layers_total = 0;
    int batches_done = 0, batches_total = 0;  // within `layer`
    double eta_seconds = 0;                   // the site's estimate for its round; 0: none
  };

  SiteRegistry(const std::vector<std::string>& allowlist, int64_t site_timeout_ms);

  // Starts a session for `site` with `token` and makes it a participant. ALREADY_EXISTS,
  // naming the site, if another process (`instance` differs) has a live session that is
  // still connected: one live session per identity. A lost or disconnected session, or one
  // of the same process, is taken over (the old token stops working).
  absl::Status StartSession(const std::string& site, const std::string& instance, const std::string& token,
                            int64_t now_ms);
  // The site owning `token`, which must be `peer` unless `peer` is "" (insecure mode);
  // refreshes its last-seen time. UNAUTHENTICATED for an unknown, replaced or lost session.
  absl::StatusOr<std::string> Authenticate(const std::string& token, const std::string& peer, int64_t now_ms);

  void PollStarted(const std::string& site, int64_t now_ms);
  void PollEnded(const std::string& site, int64_t now_ms);
  // The transport of a poll or upload stream went away (client killed, network broken).
  void StreamCancelled(const std::string& site);
  void Report(const std::string& site, const v1::HeartbeatRequest& heartbeat, int64_t now_ms);
  void SetActivity(const std::string& site, v1::SiteActivity activity, int round);

  // Marks every participant silent for longer than the timeout as lost and ends its
  // session; returns those newly lost with a description ("silent for 32 s, last seen
  // calibrating layer 3 of round 0").
  std::vector<std::pair<std::string, std::string>> DeclareLost(int64_t now_ms);
  // After a restart: these sites joined before; they count as live (seen at `now_ms`) until
  // they are silent for the site timeout.
  void RestoreParticipants(const std::vector<std::string>& sites, int64_t now_ms);

  std::vector<std::string> Participants() const;      // sorted
  std::vector<std::string> LiveParticipants() const;  // participants not lost, sorted
  bool allowed(const std::string& site) const { return sites_.count(site) != 0; }
  const Site& site(const std::string& name) const { return sites_.at(name); }
  // One object per site: state, last seen (seconds ago), current round and layer.
  nlohmann::json StatusJson(int64_t now_ms) const;
  // "calibrating layer 3 of round 0", "waiting for a round", ...
  static std::string DescribeActivity(const Site& site);

 private:
  int64_t SilentMs(const Site& site, int64_t now_ms) const;

  const int64_t site_timeout_ms_;
  std::map<std::string, Site> sites_;
  std::map<std::string, std::string> token_to_site_;
};

}  // namespace fedprllm
