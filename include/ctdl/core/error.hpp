#pragma once
// Error types. Every error ctdl throws derives from ctdl::Error.

#include <stdexcept>
#include <string>

namespace ctdl {

/// Base of every exception ctdl throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A runtime extent disagrees with another tensor's or with a static extent.
/// The message names the operation and both shapes.
class ShapeError : public Error {
 public:
  using Error::Error;
};

}  // namespace ctdl
