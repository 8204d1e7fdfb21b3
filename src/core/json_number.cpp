#include "core/json_number.h"

#include <charconv>
#include <cmath>

namespace chorus {

double json_float(float f) {
  if (!std::isfinite(f)) return f;
  char buf[64];
  const auto out = std::to_chars(buf, buf + sizeof buf, f);
  double d = f;
  std::from_chars(buf, out.ptr, d);
  return d;
}

}  // namespace chorus
