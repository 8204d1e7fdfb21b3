// metrics.jsonl writer: one JSON object per line, appended and flushed per
// row so a crashed run keeps every row it logged. Written by rank 0 only; a
// row that does not reach the file (a full disk) throws naming it.
#pragma once

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace chorus::train {

class MetricsWriter {
 public:
  // path: the file to append to; enabled = false makes every call a no-op
  // (non-zero ranks). truncate: start a fresh file instead of appending.
  MetricsWriter(const std::string& path, bool enabled, bool truncate);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  void write(const nlohmann::json& row);

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

}  // namespace chorus::train
