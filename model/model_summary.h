// One line of text about a loaded model's shape, for operators (the daemons' `check`):
//   "5 layers, hidden 64, 8 heads (4 kv), intermediate 172, vocab 512, 260.4K parameters, float32"
#pragma once

#include <string>

#include "model/llama_model.h"

namespace fedprllm {

std::string DescribeModelShape(const LlamaModel& model);

}  // namespace fedprllm
