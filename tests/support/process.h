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
// feeding `input` on standard input. FLEETWAVE_DB_OWNER is not inherited (only set from `env`),
// here and in BackgroundProcess: it names the stack's database, not the test's.
// FLEETWAVE_PLAIN_TCP is 1 unless `env` says otherwise: the test stack's broker is plain TCP.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env = {},
                         const std::string& input = "");

// A program running beside the test (a controller, a watchdog), its output appended to a log
// file. The destructor kills it (SIGKILL) and reaps it if it still runs.
class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env, const std::string& log_path);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  int pid() const { return pid_; }
  void Signal(int signal);
  // The exit status (128 + signal when killed), or -1 if it still runs after `timeout_ms`.
  int Wait(int timeout_ms);

 private:
  int pid_ = -1;
  int status_ = -1;
};

// Path of the fleetwave binary under test.
std::string FleetwaveBinary();

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it), for a server a test
// starts itself; -1 when none could be had.
int FreeLoopbackPort();

}  // namespace testing_support
