// Shared state of the tests/dist executables: the MPI runtime started by main.
#pragma once

#include "dist/runtime.h"

namespace chorus::dist::testing {
extern Runtime* g_runtime;
}
