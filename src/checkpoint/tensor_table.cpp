// tensor_table (checkpoint/layout.h), apart from the rest of layout.cpp so that
// the manifest checks link without the model (tests/fuzz).
#include "checkpoint/layout.h"
#include "models/gpt/gpt.h"

namespace chorus::checkpoint {

std::vector<TensorInfo> tensor_table(const models::Gpt& model) {
  std::vector<TensorInfo> out;
  for (const auto& p : model.param_table()) {
    TensorInfo t;
    t.name = p.name;
    t.global_shape = p.global_shape.empty() ? p.shape : p.global_shape;
    t.tp_axis = p.tp_axis;
    t.tp_parts = p.tp_parts;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace chorus::checkpoint
