#pragma once
// Threads that must never wait on I/O say so: the event loops, the timer thread and the
// store's writer. A call that may block (a store read: across the network, for a network
// backend) checks where it is; in checked builds (debug and sanitized: `make test` runs every
// test in one) it stops the process there, naming the call and the thread, so that a read
// that slipped onto a loop fails a test instead of stalling a production host.
namespace nimbus {

enum class ThreadRole : unsigned char { free, event_loop, timer, store_writer };

void set_thread_role(ThreadRole role);

// The calling thread's name as `top -H`, `perf`, gdb and /proc/<pid>/task/*/comm show it
// ("loop-0", "store-writer", "otlp-export"): at most 15 characters, the rest cut.
void name_this_thread(const char* name);
ThreadRole thread_role();
const char* to_string(ThreadRole role);

// `what` is about to block: fine on a free thread (a store I/O thread, a trigger's task
// thread, a worker thread); a bug on the others.
void check_may_block(const char* what);

}  // namespace nimbus
