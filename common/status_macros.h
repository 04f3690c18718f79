// Status helpers missing from Debian's abseil 20220623: early-return on error and
// assign-or-return for StatusOr values.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FEDPRLLM_CONCAT_INNER(a, b) a##b
#define FEDPRLLM_CONCAT(a, b) FEDPRLLM_CONCAT_INNER(a, b)

// Returns from the calling function with `expr`'s status if it is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    const ::absl::Status fedprllm_status_ = (expr);    \
    if (!fedprllm_status_.ok()) return fedprllm_status_; \
  } while (0)

// Evaluates `rexpr` (a StatusOr<T>); on error returns its status, otherwise moves the
// value into `lhs` (which may be a declaration such as `auto x`).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL(FEDPRLLM_CONCAT(fedprllm_statusor_, __LINE__), lhs, rexpr)

#define ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                          \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()
