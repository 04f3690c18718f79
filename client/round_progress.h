// RoundProgress: how far a site is through computing its masks for a round, from the
// engine's per-batch callbacks, and the time it expects to need for the rest. It also
// decides when a progress line is due (at most one per `log_interval`), so that a long
// layer shows its progress in the log and a short one does not fill it.
//
//   RoundProgress progress(/*layers_in_round=*/32, absl::Seconds(10));
//   progress.Start(absl::Now());
//   ... options.batch_progress = [&](const BatchProgress& p) {
//         if (progress.Update(p, absl::Now())) spdlog::info("{}", progress.Describe());
//       };
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "engine/site_session.h"

namespace fedprllm {

class RoundProgress {
 public:
  RoundProgress(int64_t layers_in_round, absl::Duration log_interval)
      : layers_(layers_in_round < 1 ? 1 : layers_in_round), log_interval_(log_interval) {}

  void Start(absl::Time now);
  // Records `p` (of the round's `p.layer - first_layer`-th layer; `first_layer` is the
  // round's first) and returns true when a progress line is due.
  bool Update(const BatchProgress& p, int64_t first_layer, absl::Time now);

  // Fraction of the round's computation done, [0, 1].
  double fraction() const { return fraction_; }
  // Seconds left, extrapolated from the time so far; < 0 before anything is done.
  double eta_seconds() const;
  const BatchProgress& last() const { return last_; }
  // "layer 3 (4/5 of the round): calibrating batch 4/16; 62% done, about 12 s left"
  std::string Describe() const;

 private:
  const int64_t layers_;
  const absl::Duration log_interval_;
  absl::Time start_;
  absl::Time last_log_;
  absl::Time now_;
  int64_t index_ = 0;  // of the current layer within the round
  double fraction_ = 0;
  BatchProgress last_;
};

}  // namespace fedprllm
