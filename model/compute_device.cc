// Device inventory, resolution and description (model/compute_device.h).
//
// FEDPRLLM_TORCH_HAS_CUDA is defined, on this file alone, when CMake found a CUDA LibTorch
// (top-level CMakeLists.txt). Device names come from the CUDA driver's C API through
// dlsym, so the CPU build needs no CUDA header.
#include "model/compute_device.h"

#include <dlfcn.h>
#include <torch/cuda.h>

#include <cmath>
#include <cstddef>
#include <exception>

#include "absl/strings/str_cat.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace {

#ifdef FEDPRLLM_TORCH_HAS_CUDA
constexpr bool kTorchBuiltWithCuda = true;
#else
constexpr bool kTorchBuiltWithCuda = false;
#endif

// Names and memory of the first `count` devices from libcuda.so.1, if LibTorch has loaded
// it; the driver API's ordinals are the runtime's, CUDA_VISIBLE_DEVICES applied.
std::vector<CudaDeviceInfo> AskDriver(int count) {
  std::vector<CudaDeviceInfo> devices;
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (driver == nullptr) return devices;
  // CUresult is an int enum (0 = CUDA_SUCCESS) and CUdevice an int.
  using InitFn = int (*)(unsigned);
  using DeviceGetFn = int (*)(int*, int);
  using NameFn = int (*)(char*, int, int);
  using TotalMemFn = int (*)(size_t*, int);
  auto init = reinterpret_cast<InitFn>(dlsym(driver, "cuInit"));
  auto device_get = reinterpret_cast<DeviceGetFn>(dlsym(driver, "cuDeviceGet"));
  auto name_of = reinterpret_cast<NameFn>(dlsym(driver, "cuDeviceGetName"));
  auto total_mem = reinterpret_cast<TotalMemFn>(dlsym(driver, "cuDeviceTotalMem_v2"));
  if (init != nullptr && device_get != nullptr && name_of != nullptr && total_mem != nullptr && init(0) == 0) {
    for (int i = 0; i < count; ++i) {
      int device = 0;
      char name[256] = {};
      size_t bytes = 0;
      if (device_get(&device, i) != 0 || name_of(name, sizeof(name) - 1, device) != 0 ||
          total_mem(&bytes, device) != 0) {
        break;
      }
      devices.push_back({name, static_cast<int64_t>(bytes)});
    }
  }
  dlclose(driver);  // drops only the reference RTLD_NOLOAD took
  return devices;
}

std::string CountDevices(int count) { return absl::StrCat(count, " CUDA device", count == 1 ? "" : "s"); }

}  // namespace

CudaInventory ProbeCuda() {
  CudaInventory cuda;
  try {
    cuda.device_count = static_cast<int>(torch::cuda::device_count());
  } catch (const std::exception&) {
    cuda.device_count = 0;  // a broken driver counts as no device
  }
  cuda.built = kTorchBuiltWithCuda || cuda.device_count > 0;
  if (cuda.device_count > 0) cuda.devices = AskDriver(cuda.device_count);
  return cuda;
}

absl::StatusOr<at::Device> ResolveDevice(const std::string& requested, const CudaInventory& cuda) {
  if (requested == "auto") return cuda.device_count > 0 ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  auto parsed = TorchCall("parsing a device", [&] { return at::Device(requested); });
  if (!parsed.ok() || !(parsed->is_cpu() || parsed->is_cuda())) {
    return absl::InvalidArgumentError(absl::StrCat("device \"", requested, "\": expected auto, cpu, cuda or cuda:N"));
  }
  if (parsed->is_cpu()) return at::Device(at::kCPU);
  const int index = parsed->has_index() ? parsed->index() : 0;
  if (!cuda.built) {
    return absl::FailedPreconditionError(
        absl::StrCat("device \"", requested, "\": this LibTorch has no CUDA (build with -DTorch_DIR=<a CUDA LibTorch>)"));
  }
  if (cuda.device_count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device \"", requested, "\": CUDA is built in but no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES)"));
  }
  if (index >= cuda.device_count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device \"", requested, "\": only ", CountDevices(cuda.device_count), " visible"));
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::string DescribeDevice(const at::Device& device, const std::string& requested, const CudaInventory& cuda) {
  std::string why = absl::StrCat("device: ", requested);
  if (device.is_cuda()) {
    const int index = device.has_index() ? device.index() : 0;
    if (index >= 0 && index < static_cast<int>(cuda.devices.size())) {
      const CudaDeviceInfo& info = cuda.devices[index];
      absl::StrAppend(&why, "; ", info.name, ", ", std::llround(static_cast<double>(info.memory_bytes) / (1 << 30)),
                      " GiB");
    }
    absl::StrAppend(&why, "; ", CountDevices(cuda.device_count));
  } else if (!cuda.built) {
    absl::StrAppend(&why, "; this LibTorch has no CUDA");
  } else if (cuda.device_count == 0) {
    absl::StrAppend(&why, "; CUDA built in but no device visible");
  } else {
    absl::StrAppend(&why, "; ", CountDevices(cuda.device_count), " not used");
  }
  return absl::StrCat(device.str(), " (", why, ")");
}

}  // namespace fedprllm
