// What build of Chorus this is: `chorus --version` and every run's config.json.
#pragma once

#include <string>

namespace chorus {

// The project version (CMake's project(VERSION)), e.g. "0.1.0".
const char* version();
// The git commit the binary was built from (12 hex digits, "-dirty" when the
// tree had uncommitted changes), or "unknown" when built outside a git checkout.
const char* git_revision();
// "chorus 0.1.0 (git 0123456789ab)".
std::string version_line();

}  // namespace chorus
