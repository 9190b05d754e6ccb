#include "controller/cli_common.h"

namespace controller {

void AddWatchdog(CLI::App&, Globals&) {}

}  // namespace controller
