// The ctest fixture `postgres` (tests/CMakeLists.txt): `pg_cluster start DIR` starts a
// PostgreSQL server in DIR for the whole test run (tests find it by $NIMBUS_TEST_PG=DIR and
// take a fresh database each), `pg_cluster stop DIR` stops it and removes DIR.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "postgres_server.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc != 3 || (std::strcmp(argv[1], "start") != 0 && std::strcmp(argv[1], "stop") != 0)) {
    std::fprintf(stderr, "usage: pg_cluster start|stop DIR\n");
    return 2;
  }
  const fs::path dir = argv[2];
  std::error_code ec;
  if (std::strcmp(argv[1], "stop") == 0) {
    std::ifstream in(dir / "port");
    int port = 0;
    if (in >> port && port > 0) {
      nimbus::testing::PostgresServer server(dir, port);
      server.kill_hard();  // nothing in it is worth a clean shutdown; the folder goes next
    }
    fs::remove_all(dir, ec);
    return 0;
  }
  fs::remove_all(dir, ec);  // a run that was interrupted left it
  nimbus::testing::PostgresServer server(dir);
  if (!server.start()) {
    std::fprintf(stderr, "pg_cluster: %s\n", server.error().c_str());
    return 1;
  }
  std::ofstream(dir / "port") << server.port() << "\n";
  std::printf("PostgreSQL on 127.0.0.1:%d in %s\n", server.port(), dir.c_str());
  std::fflush(stdout);
  std::_Exit(0);  // leave it running for the tests (the destructor would stop it)
}
