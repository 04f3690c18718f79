// The smallest valid server config, for the server library's tests: every required key,
// nothing else, so a test appends the lines it is about.
#pragma once

namespace fedprllm::testing {

inline constexpr char kMinimalServerYaml[] = R"(
tls: {cert: s.crt, key: s.key, ca: ca.crt}
allowed_clients: [site-a, site-b, site-c]
model: m.bin
output_dir: out
state_dir: state
)";

}  // namespace fedprllm::testing
