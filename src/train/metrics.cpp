#include "train/metrics.h"

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace chorus::train {

MetricsWriter::MetricsWriter(const std::string& path, bool enabled, bool truncate) : path_(path) {
  if (!enabled) return;
  f_ = std::fopen(path.c_str(), truncate ? "w" : "a");
  CHORUS_CHECK(f_ != nullptr, "metrics: cannot open '%s' for writing: %s", path.c_str(), std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const nlohmann::json& row) {
  if (!f_) return;
  const std::string line = row.dump() + "\n";
  // The row reaches the file at the flush: a full disk shows there, not in fwrite.
  const bool ok = std::fwrite(line.data(), 1, line.size(), f_) == line.size();
  if (ok && std::fflush(f_) == 0) return;
  const int err = errno;
  std::clearerr(f_);
  CHORUS_FAIL("metrics: writing '%s' failed: %s", path_.c_str(), std::strerror(err));
}

}  // namespace chorus::train
