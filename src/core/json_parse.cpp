#include "core/json_parse.h"

#include "core/error.h"

namespace chorus {

nlohmann::json parse_json(std::string_view text, int max_depth) {
  using nlohmann::json;
  bool too_deep = false;
  // Values deeper than the limit are dropped as they are read, so the tree
  // built never is deeper either.
  const json::parser_callback_t keep = [&](int depth, json::parse_event_t, json&) {
    too_deep = too_deep || depth > max_depth;
    return !too_deep;
  };
  json j = json::parse(text.begin(), text.end(), keep);
  CHORUS_CHECK(!too_deep, "JSON nested deeper than %d levels of arrays and objects", max_depth);
  return j;
}

}  // namespace chorus
