// What the emulation check programs (check_*.cpp) share: a failure count and CHECK, which
// prints the line and a message for each failed condition and carries on, so that one run
// reports every difference.
#pragma once

#include <cstdio>

inline int failures = 0;

#define CHECK(cond, ...)                       \
  do {                                         \
    if (!(cond)) {                             \
      ++failures;                              \
      std::printf("FAIL line %d: ", __LINE__); \
      std::printf(__VA_ARGS__);                \
      std::printf("\n");                       \
    }                                          \
  } while (0)
