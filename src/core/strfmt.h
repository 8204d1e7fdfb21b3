// printf-style formatting into std::string (GCC 12 has no <format>).
#pragma once

#include <cstdarg>
#include <cstdio>
#include <string>

namespace chorus {

__attribute__((format(printf, 1, 2))) inline std::string strfmt(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, ap2);
  va_end(ap2);
  return out;
}

}  // namespace chorus
