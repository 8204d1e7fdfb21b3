// libFuzzer target: the checkpoint manifest parser.
//   - read_manifest on the bytes as manifest.json (refused or parsed);
//   - the same JSON with its "manifest_sha256" recomputed, so the fuzzer gets
//     past the self-hash into every field check and check_complete;
//   - an accepted manifest must survive manifest_to_json -> text ->
//     manifest_from_json unchanged.
#include <nlohmann/json.hpp>

#include "checkpoint/manifest.h"
#include "core/hash.h"
#include "core/json_parse.h"
#include "fuzz_common.h"

using namespace chorus;
using nlohmann::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("manifest.json", data, size);
  fuzz::accepts([&] { checkpoint::read_manifest(path); });

  json j;
  try {
    j = parse_json(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const std::exception&) {  // read_manifest refused it above
    return 0;
  }
  if (!j.is_object()) return 0;
  j.erase("manifest_sha256");
  const std::string self = sha256_hex(j.dump());
  j["manifest_sha256"] = self;
  checkpoint::Manifest m;
  if (!fuzz::accepts([&] { m = checkpoint::manifest_from_json(j, "fuzz/manifest.json"); })) return 0;
  fuzz::accepts([&] { checkpoint::check_complete(m, "fuzz/manifest.json"); });

  // As a save writes it and a resume reads it: through the text.
  const json again = checkpoint::manifest_to_json(m);
  const checkpoint::Manifest m2 =
      checkpoint::manifest_from_json(json::parse(again.dump()), "fuzz/again.json");
  FUZZ_ASSERT(checkpoint::manifest_to_json(m2).dump() == again.dump());
  return 0;
}
