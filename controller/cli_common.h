// What the `fleetwave` subcommands share: the global flags, the usage error (exit 2), and one
// registration function per command group, each defined in its own cli_*.cc file.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <CLI/CLI.hpp>
#include <pqxx/connection>

namespace controller {

// A flag or value the user got wrong: exit status 2. The message names the flag or field and
// what is allowed.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void Require(const std::optional<std::string>& problem) {
  if (problem) throw UsageError(*problem);
}

struct Globals {
  std::string db;
  std::string mqtt = "tcp://127.0.0.1:1883";
  // The broker's security (README "Security"): TLS files for ssl://, or --plain-tcp.
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  bool plain_tcp = false;
  std::string log_format = "text";  // text | json (controller/logging.h)
  std::string log_level = "info";   // trace | debug | info | warn | error | off
};

// Connects to --db / FLEETWAVE_DB. Throws UsageError when none is given, db::Unavailable when
// it cannot be reached.
std::unique_ptr<pqxx::connection> OpenDatabase(const Globals& g);

// For a command that connects to the broker: ssl:// needs --tls-ca (and the client certificate
// and key, both or neither); tcp:// is refused unless --plain-tcp says the operator means it, and
// is then announced with a warning at start. Throws UsageError naming the flag.
void CheckBrokerSecurity(const Globals& g, const char* command);

// Registration of each command group on `app`.
void AddMigrate(CLI::App& app, Globals& g);     // cli.cc
void AddDevice(CLI::App& app, Globals& g);      // cli.cc
void AddRelease(CLI::App& app, Globals& g);     // cli.cc: release add|sign|list|halt|resume
void AddKeys(CLI::App& app);                    // cli_keys.cc
void AddController(CLI::App& app, Globals& g);  // cli_controller.cc
void AddWatchdog(CLI::App& app, Globals& g);    // cli_watchdog.cc
void AddRollout(CLI::App& app, Globals& g);     // cli_rollout.cc: rollout ..., history
void AddSimulate(CLI::App& app, Globals& g);    // cli_simulate.cc
void AddStatus(CLI::App& app, Globals& g);      // cli_status.cc: status, watch
void AddSecurity(CLI::App& app, Globals& g);    // cli_security.cc: ca, device cert, broker

}  // namespace controller
