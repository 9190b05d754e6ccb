#include "controller/cli.h"

int main(int argc, char** argv) { return controller::RunCli(argc, argv); }
