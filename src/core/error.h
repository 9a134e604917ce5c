// One exception type for every error a user can cause (bad file, bad field, bad value).
// It is caught at the CLI or HTTP boundary and turned into one clear line.
// Internal invariants use assert instead.
#pragma once
#include <stdexcept>
#include <string>

namespace whale {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // where: a file, field or tensor name; what: what was wrong and what was expected.
  Error(const std::string& where, const std::string& what)
      : std::runtime_error(where + ": " + what) {}
};

#define WHALE_CHECK(cond, where, what)                     \
  do {                                                     \
    if (!(cond)) throw ::whale::Error((where), (what));    \
  } while (0)

}  // namespace whale
