#include "checkpoint/durable.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/hash.h"

namespace chorus::checkpoint {

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

}  // namespace

void fsync_path(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  CHORUS_CHECK(fd.get() >= 0, "checkpoint: cannot open '%s' to fsync it: %s", path.c_str(),
               std::strerror(errno));
  // Some file systems refuse fsync on directories (EINVAL); the data is then as
  // durable as that file system makes it.
  if (::fsync(fd.get()) != 0 && errno != EINVAL && errno != EROFS)
    CHORUS_FAIL("checkpoint: fsync of '%s' failed: %s", path.c_str(), std::strerror(errno));
}

void write_file_durable(const std::string& path, const std::string& bytes) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  CHORUS_CHECK(fd.get() >= 0, "checkpoint: cannot create '%s': %s", path.c_str(), std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    CHORUS_CHECK(n > 0, "checkpoint: writing '%s' failed: %s", path.c_str(), std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  CHORUS_CHECK(::fsync(fd.get()) == 0, "checkpoint: fsync of '%s' failed: %s", path.c_str(),
               std::strerror(errno));
  CHORUS_CHECK(::close(fd.release()) == 0, "checkpoint: closing '%s' failed: %s", path.c_str(),
               std::strerror(errno));
}

std::string read_small_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  CHORUS_CHECK(fd.get() >= 0, "checkpoint: cannot read '%s': %s", path.c_str(), std::strerror(errno));
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    CHORUS_CHECK(n >= 0, "checkpoint: reading '%s' failed: %s", path.c_str(), std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

FileDigest digest_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  CHORUS_CHECK(fd.get() >= 0, "checkpoint: cannot read '%s': %s", path.c_str(), std::strerror(errno));
#ifdef POSIX_FADV_SEQUENTIAL
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
  std::vector<char> buf(8u << 20);
  Sha256 h;
  FileDigest d;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    CHORUS_CHECK(n >= 0, "checkpoint: reading '%s' failed: %s", path.c_str(), std::strerror(errno));
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    d.bytes += static_cast<uint64_t>(n);
  }
  d.sha256 = h.hex_digest();
  return d;
}

void drop_from_page_cache(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return;
  ::fdatasync(fd.get());
#ifdef POSIX_FADV_DONTNEED
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
#endif
}

void commit_event(int64_t step, const char* what) {
  static const struct Hook {
    long long step = -1;
    long n = -1;
    Hook() {
      if (const char* s = std::getenv("CHORUS_CKPT_KILL_AT")) {
        if (std::sscanf(s, "%lld:%ld", &step, &n) != 2) {
          std::fprintf(stderr, "CHORUS_CKPT_KILL_AT: expected STEP:N, got '%s' (ignored)\n", s);
          step = -1;
        }
      }
    }
  } hook;
  static long count = 0;
  if (hook.step < 0 || step != hook.step) return;
  if (++count == hook.n) {
    std::fprintf(stderr, "CHORUS_CKPT_KILL_AT: killing this process after '%s' (event %ld of step %lld)\n",
                 what, count, hook.step);
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
}

}  // namespace chorus::checkpoint
