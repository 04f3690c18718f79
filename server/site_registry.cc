// Sessions, per-site activity and the lost-site rule.
#include "server/site_registry.h"

#include "absl/strings/str_cat.h"

namespace fedprllm {

SiteRegistry::SiteRegistry(const std::vector<std::string>& allowlist, int64_t site_timeout_ms)
    : site_timeout_ms_(site_timeout_ms) {
  for (const std::string& name : allowlist) sites_.emplace(name, Site{});
}

int64_t SiteRegistry::SilentMs(const Site& site, int64_t now_ms) const {
  return site.held_polls > 0 ? 0 : now_ms - site.last_seen_ms;
}

absl::Status SiteRegistry::StartSession(const std::string& name, const std::string& instance, const std::string& token,
                                        int64_t now_ms) {
  Site& site = sites_.at(name);
  if (!site.token.empty() && site.instance != instance && !site.lost && !site.disconnected &&
      SilentMs(site, now_ms) <= site_timeout_ms_) {
    return absl::AlreadyExistsError(absl::StrCat(
        "site ", name, " already has a live session (last seen ", SilentMs(site, now_ms) / 1000, " s ago, ",
        DescribeActivity(site), "); a second process with the same identity is refused. If the earlier process "
        "died, joining succeeds once it has been silent for site_timeout_seconds (", site_timeout_ms_ / 1000, ")"));
  }
  if (!site.token.empty()) token_to_site_.erase(site.token);
  site.token = token;
  site.instance = instance;
  token_to_site_[token] = name;
  site.participant = true;
  site.lost = false;
  site.disconnected = false;
  site.last_seen_ms = now_ms;
  site.activity = v1::SITE_ACTIVITY_UNSPECIFIED;
  site.round = site.layer = -1;
  site.layers_done = site.layers_total = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::string> SiteRegistry::Authenticate(const std::string& token, const std::string& peer,
                                                       int64_t now_ms) {
  auto it = token_to_site_.find(token);
  if (it == token_to_site_.end()) {
    return absl::UnauthenticatedError("unknown, replaced or expired session token; join again");
  }
  if (!peer.empty() && it->second != peer) {
    return absl::UnauthenticatedError(absl::StrCat("session token belongs to another client than certificate ", peer));
  }
  Site& site = sites_.at(it->second);
  site.last_seen_ms = now_ms;
  site.disconnected = false;
  return it->second;
}

void SiteRegistry::PollStarted(const std::string& name, int64_t now_ms) {
  Site& site = sites_.at(name);
  ++site.held_polls;
  site.last_seen_ms = now_ms;
  site.activity = v1::SITE_ACTIVITY_WAITING;
}

void SiteRegistry::PollEnded(const std::string& name, int64_t now_ms) {
  Site& site = sites_.at(name);
  if (site.held_polls > 0) --site.held_polls;
  site.last_seen_ms = now_ms;
}

void SiteRegistry::StreamCancelled(const std::string& name) { sites_.at(name).disconnected = true; }

void SiteRegistry::Report(const std::string& name, const v1::HeartbeatRequest& heartbeat, int64_t now_ms) {
  Site& site = sites_.at(name);
  site.last_seen_ms = now_ms;
  site.activity = heartbeat.activity();
  site.round = heartbeat.round();
  site.layer = heartbeat.layer();
  site.layers_done = heartbeat.layers_done();
  site.layers_total = heartbeat.layers_total();
  site.batches_done = heartbeat.batches_done();
  site.batches_total = heartbeat.batches_total();
  site.eta_seconds = heartbeat.eta_seconds();
}

void SiteRegistry::SetActivity(const std::string& name, v1::SiteActivity activity, int round) {
  Site& site = sites_.at(name);
  site.activity = activity;
  site.round = round;
  if (activity != v1::SITE_ACTIVITY_CALIBRATING) {
    site.layer = -1;
    site.batches_done = site.batches_total = 0;
    site.eta_seconds = 0;
  }
}

std::vector<std::pair<std::string, std::string>> SiteRegistry::DeclareLost(int64_t now_ms) {
  std::vector<std::pair<std::string, std::string>> lost;
  for (auto& [name, site] : sites_) {
    if (!site.participant || site.lost || SilentMs(site, now_ms) <= site_timeout_ms_) continue;
    lost.emplace_back(name, absl::StrCat("silent for ", SilentMs(site, now_ms) / 1000, " s (site_timeout_seconds ",
                                         site_timeout_ms_ / 1000, "), last seen ", DescribeActivity(site)));
    site.lost = true;
    site.lost_ms = now_ms;
    token_to_site_.erase(site.token);
    site.token.clear();
  }
  return lost;
}

void SiteRegistry::RestoreParticipants(const std::vector<std::string>& names, int64_t now_ms) {
  for (const std::string& name : names) {
    auto it = sites_.find(name);
    if (it == sites_.end()) continue;  // no longer allowed: it cannot join again anyway
    it->second.participant = true;
    it->second.last_seen_ms = now_ms;
  }
}

std::vector<std::string> SiteRegistry::Participants() const {
  std::vector<std::string> out;
  for (const auto& [name, site] : sites_) {
    if (site.participant) out.push_back(name);
  }
  return out;
}

std::vector<std::string> SiteRegistry::LiveParticipants() const {
  std::vector<std::string> out;
  for (const auto& [name, site] : sites_) {
    if (site.participant && !site.lost) out.push_back(name);
  }
  return out;
}

std::string SiteRegistry::DescribeActivity(const Site& site) {
  switch (site.activity) {
    case v1::SITE_ACTIVITY_WAITING:
      return "waiting for a round";
    case v1::SITE_ACTIVITY_FETCHING:
      return absl::StrCat("fetching earlier decisions for round ", site.round);
    case v1::SITE_ACTIVITY_CALIBRATING:
      return absl::StrCat("calibrating layer ", site.layer, " of round ", site.round, " (", site.layers_done, "/",
                          site.layers_total, " layers done",
                          site.batches_total > 0 ? absl::StrCat(", batch ", site.batches_done, "/", site.batches_total)
                                                 : "",
                          site.eta_seconds > 0 ? absl::StrCat(", about ", static_cast<int64_t>(site.eta_seconds),
                                                               " s left")
                                                : "",
                          ")");
    case v1::SITE_ACTIVITY_UPLOADING:
      return absl::StrCat("uploading round ", site.round);
    default:
      return "just joined";
  }
}

nlohmann::json SiteRegistry::StatusJson(int64_t now_ms) const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, site] : sites_) {
    std::string state = !site.participant ? "not joined" : site.lost ? "lost" : DescribeActivity(site);
    out[name] = {{"state", state},
                 {"participant", site.participant},
                 {"lost", site.lost},
                 {"seconds_since_seen", site.participant ? SilentMs(site, now_ms) / 1000.0 : -1.0},
                 {"round", site.round},
                 {"layer", site.layer}};
  }
  return out;
}

}  // namespace fedprllm
