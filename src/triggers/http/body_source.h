#pragma once
// Inside the HTTP server and the gateway's proxy only (they use Asio already): a reply body
// that is sent while it arrives, for upstream replies too large (or unframed) to hold whole.
// The listener writes the head with the body's length, or chunked when it has none, then what
// read() gives, as the client takes it: a client that reads slowly slows the upstream down
// instead of filling the host's memory.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace nimbus {

struct BodySource {
  virtual ~BodySource() = default;
  std::string first;               // read already, sent first
  std::optional<uint64_t> length;  // the whole body's size (first included), when the upstream said
  // Reads more into `into`: the bytes read, 0 at the end; an error when the body cannot be
  // had whole (the client's connection is then cut, so it cannot take a part for the whole).
  virtual boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read(boost::asio::mutable_buffer into) = 0;
  // Ends a read under way (it returns an error); on the loop that reads. The listener calls it
  // to end a server-sent event stream when the host stops taking work.
  virtual void cancel() {}
};

}  // namespace nimbus
