#pragma once
// The `nimbus` command line (CLI11): init, new, validate, start, invoke, status, stop.
namespace nimbus {
int run_cli(int argc, char** argv);
}
