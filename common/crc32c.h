// CRC32C (Castagnoli) checksums for the mask wire format: every payload chunk carries the
// CRC32C of its bytes (docs/mask_wire_format.md §5).
//
//   uint32_t crc = crc32c::Value(data.data(), data.size());
//   crc = crc32c::Extend(crc, more.data(), more.size());  // same as Value over data+more
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fedprllm::crc32c {

// Returns the CRC32C of `data[0, n)` continued from `init_crc`, which is the CRC32C of some
// earlier bytes (0 for none). Reflected polynomial 0x82F63B78, initial value and final XOR
// 0xFFFFFFFF, as in RFC 3720. `data` may be null only when `n` is 0.
uint32_t Extend(uint32_t init_crc, const void* data, size_t n);

// Returns the CRC32C of `data[0, n)`.
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(std::string_view data) { return Extend(0, data.data(), data.size()); }

}  // namespace fedprllm::crc32c
