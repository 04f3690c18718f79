// RoundProgress: the fraction of a round done and its extrapolated time left.
#include "client/round_progress.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace fedprllm {

void RoundProgress::Start(absl::Time now) {
  start_ = last_log_ = now_ = now;
  fraction_ = 0;
}

bool RoundProgress::Update(const BatchProgress& p, int64_t first_layer, absl::Time now) {
  last_ = p;
  now_ = now;
  index_ = std::clamp<int64_t>(p.layer - first_layer, 0, layers_ - 1);
  // A layer is a calibration pass and a propagation pass of about the same cost; a round of
  // one layer (iterative) has only the calibration pass, so it counts whole.
  const double within = p.batches_total > 0 ? static_cast<double>(p.batches_done) / p.batches_total : 1.0;
  const double layer_fraction = layers_ == 1 ? within : (p.propagating ? 0.5 + within / 2 : within / 2);
  fraction_ = std::clamp((static_cast<double>(index_) + layer_fraction) / static_cast<double>(layers_), 0.0, 1.0);
  if (now - last_log_ < log_interval_) return false;
  last_log_ = now;
  return true;
}

double RoundProgress::eta_seconds() const {
  if (fraction_ <= 0) return -1;
  const double elapsed = absl::ToDoubleSeconds(now_ - start_);
  return std::max(0.0, elapsed / fraction_ - elapsed);
}

std::string RoundProgress::Describe() const {
  const double eta = eta_seconds();
  return absl::StrCat("layer ", last_.layer, " (", index_ + 1, "/", layers_, " of the round): ",
                      last_.propagating ? "propagating" : "calibrating", " batch ", last_.batches_done, "/",
                      last_.batches_total, "; ", static_cast<int>(std::floor(fraction_ * 100)), "% done",
                      eta < 0 ? "" : absl::StrCat(", about ", static_cast<int64_t>(std::ceil(eta)), " s left"));
}

}  // namespace fedprllm
