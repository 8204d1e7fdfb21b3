#include "core/fsync.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace chorus {

void fsync_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  CHORUS_CHECK(fd >= 0, "%s: cannot open for fsync: %s", path.c_str(), std::strerror(errno));
  int r = ::fsync(fd);
  int err = errno;
  ::close(fd);
  CHORUS_CHECK(r == 0, "%s: fsync failed: %s", path.c_str(), std::strerror(err));
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace chorus
