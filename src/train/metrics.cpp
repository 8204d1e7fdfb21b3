#include "train/metrics.h"

#include "core/error.h"

namespace chorus::train {

MetricsWriter::MetricsWriter(const std::string& path, bool enabled, bool truncate) : path_(path) {
  if (!enabled) return;
  f_ = std::fopen(path.c_str(), truncate ? "w" : "a");
  CHORUS_CHECK(f_ != nullptr, "metrics: cannot open '%s' for writing", path.c_str());
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const nlohmann::json& row) {
  if (!f_) return;
  std::string line = row.dump() + "\n";
  CHORUS_CHECK(std::fwrite(line.data(), 1, line.size(), f_) == line.size(), "metrics: write to '%s' failed",
               path_.c_str());
  std::fflush(f_);
}

}  // namespace chorus::train
