// Parsing JSON files that come from outside (tokenizer files, checkpoint
// manifests): nlohmann::json parses any depth without recursion, but copying
// or printing a value recurses once per level, so a small file of nested
// brackets ("[[[[...") overflowed the stack and crashed chorus instead of
// being refused (found by tests/fuzz). Such files are refused while parsing.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace chorus {

// Depth allowed by parse_json: far above what any Chorus file nests (a
// manifest needs 4 levels), far below what overflows a thread's stack.
inline constexpr int kMaxJsonDepth = 64;

// json::parse(text), refusing arrays and objects nested deeper than
// max_depth. Throws nlohmann::json::exception on invalid JSON, and
// chorus::Error ("JSON nested deeper than N levels ...") on a deeper one;
// callers add the file name.
nlohmann::json parse_json(std::string_view text, int max_depth = kMaxJsonDepth);

}  // namespace chorus
