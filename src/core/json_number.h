// Floats in JSON files (config.json, manifests, metrics) as the user wrote
// them. nlohmann::json stores a float as the double it widens to, so 0.9f
// would be written 0.8999999761581421; json_float(0.9f) is the double 0.9.
#pragma once

namespace chorus {

// The double nearest to the shortest decimal that reads back as f (to_chars'
// shortest round-trip form), which JSON writes as that decimal. Infinities
// and NaN pass through (nlohmann::json writes them as null).
double json_float(float f);

}  // namespace chorus
