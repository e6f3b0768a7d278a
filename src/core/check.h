#pragma once
// NIMBUS_CHECK: a cheap invariant check that stays on in release builds. For bugs only:
// never for anything user input can cause (that is an Error value).
#include <cstdio>
#include <cstdlib>

#define NIMBUS_CHECK(cond)                                                                  \
  do {                                                                                      \
    if (!(cond)) [[unlikely]] {                                                             \
      std::fprintf(stderr, "nimbus: internal check failed: %s at %s:%d\n", #cond, __FILE__, \
                   __LINE__);                                                               \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)
