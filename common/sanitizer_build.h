// Whether this translation unit is built with AddressSanitizer (the build of
// scripts/sanitize_check.sh, docs/sanitizers.md), for the few places that must know:
//
//   if (fedprllm::kAddressSanitizer) { ... }
//
// gcc says so with __SANITIZE_ADDRESS__, clang with __has_feature(address_sanitizer).
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define FEDPRLLM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FEDPRLLM_ASAN 1
#endif
#endif

namespace fedprllm {

#ifdef FEDPRLLM_ASAN
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif

}  // namespace fedprllm
