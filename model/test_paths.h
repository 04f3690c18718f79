// Paths used by tests: the bundled model and the shared real data beside the checkout.
#pragma once

#include <string>

namespace fedprllm::testing {

inline std::string SourceDir() { return FEDPRLLM_SOURCE_DIR; }
inline std::string BundledModel() { return SourceDir() + "/models/stories260K/stories260K.bin"; }
inline std::string BundledTokenizer() { return SourceDir() + "/models/stories260K/tok512.model"; }
inline std::string SharedData(const std::string& relative) { return SourceDir() + "/../shared/data/" + relative; }

}  // namespace fedprllm::testing
