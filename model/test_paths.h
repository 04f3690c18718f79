// Paths and settings used by tests: the bundled model, the shared real data beside the
// checkout, and the device that device-aware tests run on.
#pragma once

#include <cstdlib>
#include <string>

namespace fedprllm::testing {

inline std::string SourceDir() { return FEDPRLLM_SOURCE_DIR; }
inline std::string BundledModel() { return SourceDir() + "/models/stories260K/stories260K.bin"; }
inline std::string BundledTokenizer() { return SourceDir() + "/models/stories260K/tok512.model"; }
// `relative` under FEDPRLLM_SHARED_DATA when set (a copy of shared/data elsewhere, e.g. on a
// GPU machine that gets only the checkout), else under ../shared/data beside the checkout.
inline std::string SharedData(const std::string& relative) {
  const char* dir = std::getenv("FEDPRLLM_SHARED_DATA");
  return (dir != nullptr && *dir != '\0' ? std::string(dir) : SourceDir() + "/../shared/data") + "/" + relative;
}
// The device spelling of device-aware tests (the model's golden tests): FEDPRLLM_TEST_DEVICE
// ("cpu", "cuda", "cuda:N", "auto"), default "cpu".
inline std::string TestDevice() {
  const char* device = std::getenv("FEDPRLLM_TEST_DEVICE");
  return device != nullptr && *device != '\0' ? device : "cpu";
}

}  // namespace fedprllm::testing
