#include "core/fsync.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

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

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  CHORUS_CHECK(fd >= 0, "%s: cannot create: %s", tmp.c_str(), std::strerror(errno));
  std::string failed;
  for (size_t done = 0; done < bytes.size() && failed.empty();) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) failed = strfmt("writing failed: %s", n < 0 ? std::strerror(errno) : "no progress");
    else done += static_cast<size_t>(n);
  }
  if (failed.empty() && ::fsync(fd) != 0) failed = strfmt("fsync failed: %s", std::strerror(errno));
  if (::close(fd) != 0 && failed.empty()) failed = strfmt("closing failed: %s", std::strerror(errno));
  if (failed.empty() && std::rename(tmp.c_str(), path.c_str()) != 0)
    failed = strfmt("renaming it to %s failed: %s", path.c_str(), std::strerror(errno));
  if (!failed.empty()) {
    ::unlink(tmp.c_str());
    CHORUS_FAIL("%s: %s (%s is unchanged)", tmp.c_str(), failed.c_str(), path.c_str());
  }
  fsync_dir(std::filesystem::path(path).parent_path().string());
}

}  // namespace chorus
