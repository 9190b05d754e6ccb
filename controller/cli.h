// The `fleetwave` command line. Exit status: 0 success, 2 usage (bad flags or values: the
// message names the field and what is allowed), 1 runtime failure (database unreachable,
// conflicting record, rejected import).
#pragma once

namespace controller {

int RunCli(int argc, char** argv);

}  // namespace controller
