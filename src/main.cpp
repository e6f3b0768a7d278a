// The nimbus binary: all glue lives in the parts; this only hands over to the CLI.
#include "cli/commands.h"

int main(int argc, char** argv) { return nimbus::run_cli(argc, argv); }
