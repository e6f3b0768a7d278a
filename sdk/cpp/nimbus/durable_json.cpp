// Boost.JSON compiled into a function that uses nimbus/durable.h (its header-only build): the
// nimbus::durable CMake target adds this one source, so a function built from many files
// still has one copy, and the function library needs no Boost library at run time.
#include <boost/json/src.hpp>
