// Typed errors for library code. Library code never exits: it throws
// chorus::Error with what failed, where (file / field) and what was expected.
// Only src/apps catches, prints and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

#include "core/strfmt.h"

namespace chorus {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// An error every rank of the job raised together, with the same message (a
// refusal agreed on over the world, e.g. a run directory in use): the app
// reports it once and every rank exits normally instead of aborting the job.
class AgreedError : public Error {
 public:
  using Error::Error;
};

}  // namespace chorus

#define CHORUS_STR2(x) #x
#define CHORUS_STR(x) CHORUS_STR2(x)

// CHORUS_CHECK(cond, printf-style message...): throws chorus::Error naming the
// source location when cond is false.
#define CHORUS_CHECK(cond, ...)                                                     \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      throw ::chorus::Error(::chorus::strfmt(__VA_ARGS__) +                         \
                            " [" __FILE__ ":" CHORUS_STR(__LINE__) "]");           \
    }                                                                               \
  } while (0)

#define CHORUS_FAIL(...) CHORUS_CHECK(false, __VA_ARGS__)
