// Site agreement: how far each site's masks are from a decided mask, and the robust rule that
// flags a site whose agreement is far below the other sites' (docs/robustness.md §2).
//
//   AgreementCounts counts;                                        // per site, over a round
//   for each tensor: RETURN_IF_ERROR(AddAgreement(site_mask, decision_mask, &counts));
//   OutlierVerdict v = FindOutliers({a.agreement(), b.agreement(), c.agreement()}, options);
//   if (v.outlier[2]) ...                                          // site c is far below
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/packed_mask.h"

namespace fedprllm {

enum class OutlierPolicy {
  kReport,   // outliers are logged and named in the report; their votes count
  kExclude,  // outliers' votes are dropped and the round is decided again without them
};
// "report" | "exclude".
absl::StatusOr<OutlierPolicy> ParseOutlierPolicy(absl::string_view text);
absl::string_view OutlierPolicyName(OutlierPolicy policy);

struct OutlierOptions {
  // Default: kReport.
  OutlierPolicy policy = OutlierPolicy::kReport;
  // A site is an outlier when its robust z-score is below -z_threshold (and min_gap holds).
  // Default 3.5 (Iglewicz and Hoaglin's cut-off for the modified z-score).
  double z_threshold = 3.5;
  // ... and its agreement is more than min_gap below the median (agreement units, 0..1).
  // Default 0.05: sites with somewhat different data are not outliers however tight the
  // others are.
  double min_gap = 0.05;
  // Fewer sites than this: nobody is an outlier (the median of two says nothing). Default 3.
  int min_sites = 3;
  // z_threshold in [1, 100], min_gap in [0, 1], min_sites in [3, 1000].
  absl::Status Validate() const;
};

// One site's masks against a decision, summed over the tensors compared.
struct AgreementCounts {
  int64_t weights = 0;          // mask bits compared
  int64_t site_pruned = 0;      // bits the site prunes
  int64_t decision_pruned = 0;  // bits the decision prunes
  int64_t both_pruned = 0;      // bits both prune
  // Fraction of the site's pruned weights that the decision also prunes, in [0, 1]; 1 when
  // the site prunes nothing (nothing it pruned disagrees).
  double agreement() const {
    return site_pruned == 0 ? 1.0 : static_cast<double>(both_pruned) / static_cast<double>(site_pruned);
  }
  // Normalized Hamming distance to the decision: the fraction of weights on which the site's
  // mask and the decision differ, in [0, 1]; 0 when nothing was compared.
  double distance() const {
    return weights == 0 ? 0.0
                        : static_cast<double>(site_pruned + decision_pruned - 2 * both_pruned) /
                              static_cast<double>(weights);
  }
};

// Adds `site` against `decision` (same shape; padding bits zero in both, as every validated
// mask has them) to `counts`. Popcounts over the packed bytes, 64 bits at a time. Errors:
// INVALID_ARGUMENT on a shape mismatch (counts unchanged).
absl::Status AddAgreement(const PackedMask& site, const PackedMask& decision, AgreementCounts* counts);

// The outlier rule over one round's sites.
struct OutlierVerdict {
  // False with fewer than min_sites sites: then every outlier[i] is false.
  bool applied = false;
  double median = 0;  // of the agreements
  double mad = 0;     // median absolute deviation from `median`
  // Agreement strictly below this is an outlier: median - max(min_gap, z_threshold * 1.4826
  // * mad). Meaningful when applied.
  double cutoff = 0;
  // Per site: (agreement - median) / (1.4826 * mad); when mad == 0, 0 for a site at the
  // median and -/+infinity below/above it.
  std::vector<double> z;
  std::vector<bool> outlier;
};
// Applies the rule to `agreement` (one value per site, in [0, 1]; order is kept). Sites with
// equal agreement get equal verdicts. Fewer than half the sites can be outliers (they must lie
// strictly below the median by more than 1.4826 * 3.5 MADs), so most sites' votes always count.
OutlierVerdict FindOutliers(absl::Span<const double> agreement, const OutlierOptions& options);

}  // namespace fedprllm
