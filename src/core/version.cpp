#include "core/version.h"

#include "git_revision.h"  // generated: CHORUS_GIT_REVISION

namespace chorus {

const char* version() { return CHORUS_VERSION; }
const char* git_revision() { return CHORUS_GIT_REVISION; }
std::string version_line() { return std::string("chorus ") + version() + " (git " + git_revision() + ")"; }

}  // namespace chorus
