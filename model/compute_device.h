// Which device a forward pass runs on: what this process can see of CUDA, how a user's
// spelling ("auto", "cpu", "cuda", "cuda:N") resolves against it, and the one line that
// tells an operator what was chosen and why.
//
//   const CudaInventory cuda = ProbeCuda();
//   ASSIGN_OR_RETURN(at::Device device, ResolveDevice("auto", cuda));
//   spdlog::info("computing on {}", DescribeDevice(device, "auto", cuda));
//   // "cuda:0 (device: auto; NVIDIA H200, 140 GiB; 1 CUDA device)"
//
// The resolution and the description are pure functions of the inventory, so tests can
// give them any machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace fedprllm {

// One visible CUDA device as the CUDA driver names it.
struct CudaDeviceInfo {
  std::string name;          // e.g. "NVIDIA H200"
  int64_t memory_bytes = 0;  // total device memory, bytes
};

// What this process can see of CUDA.
struct CudaInventory {
  // This LibTorch was built with CUDA (the CMake configure found a CUDA LibTorch, or it
  // sees a device).
  bool built = false;
  // CUDA devices visible to this process (after CUDA_VISIBLE_DEVICES); 0 without CUDA.
  int device_count = 0;
  // Per visible device, in LibTorch's order, when the driver could be asked; may be empty
  // or shorter than device_count, which descriptions then leave out.
  std::vector<CudaDeviceInfo> devices;
};

// Asks LibTorch (and, for names, the already loaded CUDA driver) what is there. Never
// throws; without CUDA it returns {built = false, device_count = 0}. Loads no library
// that LibTorch has not loaded itself.
CudaInventory ProbeCuda();

// Resolves a user's device spelling against `cuda`:
//   "auto"   -> cuda:0 when a CUDA device is visible, else cpu;
//   "cpu"    -> cpu;
//   "cuda"   -> cuda:0;  "cuda:N" -> cuda:N.
// Errors: INVALID_ARGUMENT for any other spelling; FAILED_PRECONDITION for a CUDA device
// that this LibTorch lacks, that no visible device backs, or whose index N is not below
// device_count. Messages quote the spelling and say which of the three it was.
absl::StatusOr<at::Device> ResolveDevice(const std::string& requested, const CudaInventory& cuda);

// The operator's line for a resolved device, e.g.
//   "cuda:0 (device: auto; NVIDIA H200, 140 GiB; 1 CUDA device)"
//   "cpu (device: auto; this LibTorch has no CUDA)"
//   "cpu (device: auto; CUDA built in but no device visible)"
//   "cpu (device: cpu; 2 CUDA devices not used)"
// Memory is in GiB (2^30 bytes), rounded.
std::string DescribeDevice(const at::Device& device, const std::string& requested, const CudaInventory& cuda);

}  // namespace fedprllm
