// Device resolution and description against made-up machines (model/compute_device.h).
#include "model/compute_device.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

namespace fedprllm {
namespace {

const CudaInventory kCpuOnlyBuild{};
const CudaInventory kCudaBuildNoDevice{/*built=*/true, /*device_count=*/0, {}};
const CudaInventory kOneH200{true, 1, {{"NVIDIA H200", 150754820096}}};  // 143771 MiB
const CudaInventory kTwoUnnamed{true, 2, {}};

TEST(ResolveDeviceTest, AutoPicksTheFirstCudaDeviceWhenOneIsVisible) {
  EXPECT_EQ(*ResolveDevice("auto", kOneH200), at::Device(at::kCUDA, 0));
  EXPECT_EQ(*ResolveDevice("auto", kTwoUnnamed), at::Device(at::kCUDA, 0));
  EXPECT_EQ(*ResolveDevice("auto", kCpuOnlyBuild), at::Device(at::kCPU));
  EXPECT_EQ(*ResolveDevice("auto", kCudaBuildNoDevice), at::Device(at::kCPU));
}

TEST(ResolveDeviceTest, ExplicitSpellings) {
  EXPECT_EQ(*ResolveDevice("cpu", kOneH200), at::Device(at::kCPU));
  EXPECT_EQ(*ResolveDevice("cpu", kCpuOnlyBuild), at::Device(at::kCPU));
  EXPECT_EQ(*ResolveDevice("cuda", kTwoUnnamed), at::Device(at::kCUDA, 0));
  EXPECT_EQ(*ResolveDevice("cuda:1", kTwoUnnamed), at::Device(at::kCUDA, 1));
  for (const char* bad : {"gpu", "", "cuda:x", "mps", "AUTO"}) {
    EXPECT_EQ(ResolveDevice(bad, kOneH200).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ResolveDeviceTest, CudaThatIsNotThereSaysWhy) {
  auto no_cuda = ResolveDevice("cuda", kCpuOnlyBuild);
  EXPECT_EQ(no_cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(no_cuda.status().message().find("this LibTorch has no CUDA"), std::string::npos) << no_cuda.status();
  auto no_device = ResolveDevice("cuda:0", kCudaBuildNoDevice);
  EXPECT_EQ(no_device.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(no_device.status().message().find("no CUDA device is visible"), std::string::npos) << no_device.status();
  auto out_of_range = ResolveDevice("cuda:2", kTwoUnnamed);
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(out_of_range.status().message(), "device \"cuda:2\": only 2 CUDA devices visible");
}

TEST(DescribeDeviceTest, OneLinePerMachine) {
  EXPECT_EQ(DescribeDevice(at::Device(at::kCUDA, 0), "auto", kOneH200),
            "cuda:0 (device: auto; NVIDIA H200, 140 GiB; 1 CUDA device)");
  EXPECT_EQ(DescribeDevice(at::Device(at::kCUDA, 1), "cuda:1", kTwoUnnamed), "cuda:1 (device: cuda:1; 2 CUDA devices)");
  EXPECT_EQ(DescribeDevice(at::Device(at::kCPU), "auto", kCpuOnlyBuild), "cpu (device: auto; this LibTorch has no CUDA)");
  EXPECT_EQ(DescribeDevice(at::Device(at::kCPU), "auto", kCudaBuildNoDevice),
            "cpu (device: auto; CUDA built in but no device visible)");
  EXPECT_EQ(DescribeDevice(at::Device(at::kCPU), "cpu", kTwoUnnamed), "cpu (device: cpu; 2 CUDA devices not used)");
}

TEST(ProbeCudaTest, AgreesWithLibTorch) {
  const CudaInventory cuda = ProbeCuda();
  EXPECT_EQ(cuda.device_count > 0, at::hasCUDA());
  EXPECT_LE(static_cast<int>(cuda.devices.size()), cuda.device_count);
  if (cuda.device_count > 0) EXPECT_TRUE(cuda.built);
}

}  // namespace
}  // namespace fedprllm
