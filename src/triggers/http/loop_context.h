#pragma once
// The io_context behind one of the EventLoops, for the few .cpp files that run Asio work on
// the loops themselves (the gateway's upstream proxy). Asio-ful: never include from a header.
#include <boost/asio/io_context.hpp>

#include "triggers/http/server.h"

namespace nimbus {

boost::asio::io_context& loop_context(EventLoops& loops, int index);

}  // namespace nimbus
