// For the engine's brute-force test oracles: the flat indices of every comparison group of a
// [rows, cols] matrix, written out by loops independent of the kernels under test.
#pragma once

#include <cstdint>
#include <numeric>
#include <vector>

#include "engine/mask_selection.h"

namespace fedprllm::testing {

// N:M: each run of m consecutive elements of a row (group ignored). Otherwise one group per
// matrix (kLayer), per row (kRow) or per column (kColumn), in index order.
inline std::vector<std::vector<int64_t>> FlatIndexGroups(int64_t rows, int64_t cols, ComparisonGroup group,
                                                         const SparsityPattern& p) {
  std::vector<std::vector<int64_t>> groups;
  if (p.structured()) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c0 = 0; c0 < cols; c0 += p.m) {
        groups.emplace_back();
        for (int64_t c = c0; c < c0 + p.m; ++c) groups.back().push_back(r * cols + c);
      }
    }
  } else if (group == ComparisonGroup::kLayer) {
    groups.emplace_back(rows * cols);
    std::iota(groups.back().begin(), groups.back().end(), 0);
  } else if (group == ComparisonGroup::kRow) {
    for (int64_t r = 0; r < rows; ++r) {
      groups.emplace_back();
      for (int64_t c = 0; c < cols; ++c) groups.back().push_back(r * cols + c);
    }
  } else {
    for (int64_t c = 0; c < cols; ++c) {
      groups.emplace_back();
      for (int64_t r = 0; r < rows; ++r) groups.back().push_back(r * cols + c);
    }
  }
  return groups;
}

}  // namespace fedprllm::testing
