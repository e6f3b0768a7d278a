#include "core/thread_role.h"

#include <pthread.h>

#include <cstdio>
#include <cstring>
#include <cstdlib>

namespace nimbus {
namespace {

thread_local ThreadRole t_role = ThreadRole::free;

}  // namespace

void set_thread_role(ThreadRole role) { t_role = role; }
ThreadRole thread_role() { return t_role; }

void name_this_thread(const char* name) {
  char cut[16];
  std::strncpy(cut, name, sizeof cut - 1);
  cut[sizeof cut - 1] = '\0';
  pthread_setname_np(pthread_self(), cut);  // naming only: a failure changes nothing else
}

const char* to_string(ThreadRole role) {
  switch (role) {
    case ThreadRole::free: return "a thread that may block";
    case ThreadRole::event_loop: return "an event loop";
    case ThreadRole::timer: return "the timer thread";
    case ThreadRole::store_writer: return "the store's writer";
  }
  return "an unknown thread";
}

void check_may_block(const char* what) {
#ifndef NDEBUG
  if (t_role == ThreadRole::free) return;
  std::fprintf(stderr, "nimbus: bug: %s on %s, which must never wait on I/O (docs/threads.md)\n", what,
               to_string(t_role));
  std::abort();
#else
  (void)what;
#endif
}

}  // namespace nimbus
