// Runs a program to completion and captures what it printed: the CLI is tested as users run it.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace testing_support {

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed by one
  std::string out;
  std::string err;
};

// Runs `argv` with the current environment plus `env` (an empty value unsets the variable),
// feeding `input` on standard input.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env = {},
                         const std::string& input = "");

// Path of the fleetwave binary under test.
std::string FleetwaveBinary();

}  // namespace testing_support
