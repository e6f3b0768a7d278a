#pragma once
// Expected<T>: a value or an Error that says what went wrong, where, and what to do.
// Failures the world causes are values (see CONVENTIONS.md); exceptions stay at boundaries.
#include <string>
#include <utility>
#include <variant>

#include "core/check.h"

namespace nimbus {

struct Error {
  Error(std::string message, std::string code = {}) : message(std::move(message)), code(std::move(code)) {}  // NOLINT
  std::string message;
  std::string code;  // a kind a caller can act on (e.g. store_error::conflict); empty = general
};

template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Expected(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    NIMBUS_CHECK(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    NIMBUS_CHECK(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    NIMBUS_CHECK(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const {
    NIMBUS_CHECK(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

// For operations that return nothing but can fail.
struct Done {};
using Status = Expected<Done>;
inline Status ok_status() { return Done{}; }

}  // namespace nimbus
