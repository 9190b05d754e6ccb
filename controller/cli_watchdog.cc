#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "controller/cli_common.h"
#include "controller/watchdog.h"
#include "db/connection.h"

namespace controller {
namespace {

// The running watchdog, for the signal handler: Stop() is async-signal-safe.
std::atomic<Watchdog*> running_watchdog{nullptr};

void StopOnSignal(int) {
  if (Watchdog* w = running_watchdog.load()) w->Stop();
}

// SIGINT and SIGTERM stop `watchdog` while this lives; the previous handlers come back after,
// however Run() ends.
class StopOnSignals {
 public:
  explicit StopOnSignals(Watchdog& watchdog) {
    running_watchdog.store(&watchdog);
    struct sigaction stop = {};
    stop.sa_handler = StopOnSignal;
    sigemptyset(&stop.sa_mask);
    sigaction(SIGINT, &stop, &old_int_);
    sigaction(SIGTERM, &stop, &old_term_);
  }
  ~StopOnSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    running_watchdog.store(nullptr);
  }
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

// Seconds given on the command line, checked to lie in (min, max] (or [min, max] when
// `min_inclusive`), as milliseconds (at least 1 when min is exclusive).
std::chrono::milliseconds SecondsFlag(const char* flag, double value, double min, double max,
                                      bool min_inclusive) {
  const bool ok = (min_inclusive ? value >= min : value > min) && value <= max;
  if (!ok) {
    throw UsageError(fmt::format("{} {:g} is invalid: use {} {:g} and at most {:g} seconds", flag,
                                 value, min_inclusive ? "at least" : "more than", min, max));
  }
  auto ms = static_cast<int64_t>(std::ceil(value * 1000));
  return std::chrono::milliseconds(min_inclusive ? ms : std::max<int64_t>(ms, 1));
}

struct WatchdogFlags {
  double interval = 5;
  double stale_after = 30;
  double stop_grace = 10;
  bool once = false;
  bool supervise = false;
  std::vector<std::string> command;
};

}  // namespace

void AddWatchdog(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand(
      "watchdog",
      "Keep exactly one cycle running with a fresh heartbeat; supervise the controller");
  cmd->footer(
      "Every --interval: no running cycle -> start one (never a second one); a running cycle\n"
      "whose heartbeat is older than --stale-after -> record a heartbeat_stale event (once per\n"
      "episode) and, with --supervise, restart the controller (SIGTERM, --stop-grace, SIGKILL).\n"
      "A supervised command that exits is restarted with backoff (1 s doubling to 30 s).\n"
      "An unreachable database is logged and retried. Stops (and stops the command) on SIGINT\n"
      "or SIGTERM.\n"
      "Example:\n  fleetwave watchdog --supervise -- fleetwave controller\n"
      "  fleetwave watchdog --once");
  auto f = std::make_shared<WatchdogFlags>();
  cmd->add_option("--interval", f->interval, "Seconds between checks")->capture_default_str();
  cmd->add_option("--stale-after", f->stale_after,
                  "A heartbeat older than this many seconds is stale; also how long a (re)started "
                  "controller has before its heartbeat is judged")
      ->capture_default_str();
  cmd->add_option("--stop-grace", f->stop_grace,
                  "Seconds from SIGTERM to SIGKILL when stopping the supervised command")
      ->capture_default_str();
  cmd->add_flag("--once", f->once, "Check once, print what was seen and done, and exit");
  cmd->add_flag("--supervise", f->supervise,
                "Run the command given after -- and restart it when it exits or its heartbeat "
                "goes stale");
  cmd->add_option("command", f->command, "With --supervise: the command to run, after --");
  cmd->callback([&g, f] {
    WatchdogOptions o;
    o.interval = SecondsFlag("--interval", f->interval, 0, 86400, false);
    o.stale_after = SecondsFlag("--stale-after", f->stale_after, 0, 86400, false);
    o.stop_grace = SecondsFlag("--stop-grace", f->stop_grace, 0, 3600, true);
    if (f->supervise && f->command.empty())
      throw UsageError(
          "--supervise needs a command after `--`, e.g. --supervise -- fleetwave controller");
    if (!f->supervise && !f->command.empty())
      throw UsageError("unexpected argument \"" + f->command.front() +
                       "\": to supervise a command, use --supervise -- " + f->command.front() +
                       " ...");
    if (f->once && f->supervise)
      throw UsageError("--once checks once and exits: it cannot be combined with --supervise");
    if (g.db.empty()) OpenDatabase(g);  // throws the usage error naming --db and FLEETWAVE_DB
    o.db = g.db;
    o.supervise = f->command;

    if (f->once) {
      Watchdog watchdog(o);
      WatchdogReport r = watchdog.CheckOnce();
      if (r.error) throw db::Error(*r.error);
      std::printf("%s\n", r.Describe().c_str());
      return;
    }

    Watchdog watchdog(o);
    StopOnSignals stop_on_signals(watchdog);
    spdlog::info("watchdog: checking {} every {:g} s (stale after {:g} s){}",
                 db::DescribeTarget(o.db), f->interval, f->stale_after,
                 o.supervise.empty() ? "" : ", supervising the controller");
    try {
      watchdog.Run();
    } catch (const CommandError& e) {
      throw UsageError(std::string("--supervise: ") + e.what());
    }
    spdlog::info("watchdog: stopped");
  });
}

}  // namespace controller
