// Agreement counts over packed masks, and the median/MAD outlier rule.
#include "engine/site_agreement.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace fedprllm {
namespace {

// Consistency constant: 1.4826 * MAD estimates the standard deviation of normal data.
constexpr double kMadToSigma = 1.4826;

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

}  // namespace

absl::StatusOr<OutlierPolicy> ParseOutlierPolicy(absl::string_view text) {
  if (text == "report") return OutlierPolicy::kReport;
  if (text == "exclude") return OutlierPolicy::kExclude;
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": expected report or exclude"));
}

absl::string_view OutlierPolicyName(OutlierPolicy policy) {
  return policy == OutlierPolicy::kExclude ? "exclude" : "report";
}

absl::Status OutlierOptions::Validate() const {
  if (!(z_threshold >= 1.0 && z_threshold <= 100.0)) {
    return absl::InvalidArgumentError(absl::StrCat("outlier z_threshold ", z_threshold, " is outside [1, 100]"));
  }
  if (!(min_gap >= 0.0 && min_gap <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("outlier min_gap ", min_gap, " is outside [0, 1]"));
  }
  if (min_sites < 3 || min_sites > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("outlier min_sites ", min_sites, " is outside [3, 1000]"));
  }
  return absl::OkStatus();
}

absl::Status AddAgreement(const PackedMask& site, const PackedMask& decision, AgreementCounts* counts) {
  if (site.shape() != decision.shape() || site.bytes().size() != decision.bytes().size()) {
    return absl::InvalidArgumentError(absl::StrCat("site mask of shape ", ShapeToString(site.shape()),
                                                   " compared with a decision of shape ",
                                                   ShapeToString(decision.shape())));
  }
  const uint8_t* a = site.bytes().data();
  const uint8_t* b = decision.bytes().data();
  const size_t n = site.bytes().size();
  int64_t ones_a = 0, ones_b = 0, both = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    ones_a += __builtin_popcountll(x);
    ones_b += __builtin_popcountll(y);
    both += __builtin_popcountll(x & y);
  }
  for (; i < n; ++i) {
    ones_a += __builtin_popcount(a[i]);
    ones_b += __builtin_popcount(b[i]);
    both += __builtin_popcount(static_cast<unsigned>(a[i] & b[i]));
  }
  counts->weights += site.numel();
  counts->site_pruned += ones_a;
  counts->decision_pruned += ones_b;
  counts->both_pruned += both;
  return absl::OkStatus();
}

OutlierVerdict FindOutliers(absl::Span<const double> agreement, const OutlierOptions& options) {
  OutlierVerdict v;
  const size_t n = agreement.size();
  v.z.assign(n, 0.0);
  v.outlier.assign(n, false);
  if (n == 0) return v;
  const std::vector<double> values(agreement.begin(), agreement.end());
  v.median = Median(values);
  std::vector<double> deviations(n);
  for (size_t i = 0; i < n; ++i) deviations[i] = std::fabs(values[i] - v.median);
  v.mad = Median(deviations);
  const double scale = kMadToSigma * v.mad;
  for (size_t i = 0; i < n; ++i) {
    const double d = values[i] - v.median;
    if (scale > 0) {
      v.z[i] = d / scale;
    } else {
      v.z[i] = d == 0 ? 0.0 : std::copysign(std::numeric_limits<double>::infinity(), d);
    }
  }
  v.cutoff = v.median - std::max(options.min_gap, options.z_threshold * scale);
  v.applied = static_cast<int>(n) >= options.min_sites;
  if (!v.applied) return v;
  size_t flagged = 0;
  for (size_t i = 0; i < n; ++i) {
    // Both conditions, written as the operator reads them: far in the sites' own spread,
    // and far in absolute terms.
    v.outlier[i] = v.z[i] < -options.z_threshold && v.median - values[i] > options.min_gap;
    flagged += v.outlier[i] ? 1 : 0;
  }
  // Cannot happen (outliers lie strictly below the median by more than 5 MADs, so fewer
  // than half the sites can); kept so that no arithmetic surprise ever drops a majority.
  if (2 * flagged >= n) v.outlier.assign(n, false);
  return v;
}

}  // namespace fedprllm
