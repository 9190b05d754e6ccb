#include "controller/cli_common.h"

namespace controller {

void AddRollout(CLI::App&, Globals&) {}

}  // namespace controller
