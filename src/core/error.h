// Typed errors for library code. Library code never exits: it throws
// chorus::Error with what failed, where (file / field) and what was expected.
// Only src/apps catches, prints and exits non-zero.
//
// what() is the message alone, as users see it. The source location of a
// CHORUS_CHECK is kept apart (where(), a path relative to the source tree such
// as "src/data/shard.cpp:120") and printed by the apps only when the
// environment variable CHORUS_DEBUG is set to a non-empty value other than 0:
// an error line never ends with a path of the machine that built the binary.
#pragma once

#include <stdexcept>
#include <string>

#include "core/strfmt.h"

namespace chorus {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, std::string where = "")
      : std::runtime_error(what), where_(std::move(where)) {}
  // "src/<folder>/<file>:<line>" of the check that failed, or "" if unknown.
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

// An error every rank of the job raised together, with the same message (a
// refusal agreed on over the world, e.g. a run directory in use): the app
// reports it once and every rank exits normally instead of aborting the job.
class AgreedError : public Error {
 public:
  using Error::Error;
};

// __FILE__ (an absolute path of the build machine) shortened to the part from
// the last "src/" or "tests/" on, so that a location names no build machine.
constexpr const char* source_relative(const char* file) {
  const char* out = file;
  for (const char* p = file; *p; ++p) {
    if ((p == file || p[-1] == '/') &&
        ((p[0] == 's' && p[1] == 'r' && p[2] == 'c' && p[3] == '/') ||
         (p[0] == 't' && p[1] == 'e' && p[2] == 's' && p[3] == 't' && p[4] == 's' && p[5] == '/')))
      out = p;
  }
  return out;
}

}  // namespace chorus

#define CHORUS_STR2(x) #x
#define CHORUS_STR(x) CHORUS_STR2(x)

// CHORUS_CHECK(cond, printf-style message...): throws chorus::Error with the
// message and, apart from it, the source location when cond is false.
#define CHORUS_CHECK(cond, ...)                                                                     \
  do {                                                                                              \
    if (!(cond)) {                                                                                  \
      throw ::chorus::Error(::chorus::strfmt(__VA_ARGS__),                                          \
                            std::string(::chorus::source_relative(__FILE__)) + ":" CHORUS_STR(__LINE__)); \
    }                                                                                               \
  } while (0)

#define CHORUS_FAIL(...) CHORUS_CHECK(false, __VA_ARGS__)
