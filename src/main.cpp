// The nimbus binary: all glue lives in the parts; this only hands over to the CLI.
#include <malloc.h>

#include "cli/commands.h"

int main(int argc, char** argv) {
#ifndef NIMBUS_JEMALLOC
  // Without jemalloc (a machine without libjemalloc-dev; the sanitizers' own allocator ignores
  // this): glibc hands a
  // thread's free heap top back to the kernel (madvise) once it passes the trim threshold,
  // 128 KiB at first; the store writer's commits grow and shrink theirs on every group, and
  // under a durable load the madvise calls, their TLB flushes and the page faults that take the
  // memory back cost a fifth of the host's CPU (perf, bench/durable.py). Free memory up to
  // 64 MiB stays with its arena; and blocks up to 32 MiB come from the arenas, not from a mmap
  // and munmap each (setting the trim threshold fixes the mmap threshold too).
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
  return nimbus::run_cli(argc, argv);
}
