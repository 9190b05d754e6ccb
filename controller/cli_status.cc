// `fleetwave status [--json]` and `fleetwave watch`: where every rollout stands, read from the
// database alone, so they work while no controller runs.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "controller/approval_links.h"
#include "controller/cli_common.h"
#include "controller/status_json.h"
#include "db/connection.h"
#include "db/rollout_queries.h"

namespace controller {
namespace {

std::string OrDash(const std::optional<std::string>& s) { return s ? *s : "-"; }

// "[#######.............]" for done of total, `width` characters inside the brackets.
std::string Bar(int64_t done, int64_t total, int width) {
  const int filled =
      total > 0 ? static_cast<int>(std::min<int64_t>(done, total) * width / total) : 0;
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

int64_t Finished(const db::ExecutionCounts& c) {
  return c.succeeded + c.failed + c.rejected + c.timed_out + c.canceled;
}

// The status as text; `bars` adds a progress bar per rollout (for a terminal).
std::string Render(const db::Status& s, bool bars) {
  std::string out;
  char line[512];
  if (!s.cycle) {
    out += "no cycle has started yet: start `fleetwave controller` (or `fleetwave watchdog`)\n";
  } else {
    const auto& c = *s.cycle;
    std::snprintf(line, sizeof line, "cycle %lld: %s since %s, %s; heartbeat %s\n",
                  static_cast<long long>(c.id), c.state.c_str(), c.started_at.c_str(),
                  c.planned_at ? ("planned " + *c.planned_at + ", " + std::to_string(c.rollouts) +
                                  " rollout(s)")
                                     .c_str()
                               : ("plans from " + c.not_before).c_str(),
                  c.heartbeat_at.c_str());
    out += line;
  }
  if (s.leader) {
    std::snprintf(line, sizeof line, "leader: %s (epoch %lld), heartbeat %s, lease %s %s\n",
                  s.leader->holder.c_str(), static_cast<long long>(s.leader->epoch),
                  s.leader->heartbeat_at.c_str(), s.leader->expired ? "expired" : "expires",
                  s.leader->expires_at.c_str());
    out += line;
  } else {
    out += "leader: none (no controller has run against this database)\n";
  }
  for (const auto& d : s.rollouts) {
    const auto& r = d.rollout;
    std::snprintf(line, sizeof line, "\nrollout %s  %s %s  %s  wave %d of %d  %lld of %lld done",
                  r.id.c_str(), r.model.c_str(), r.version.c_str(), r.state.c_str(), r.current_wave,
                  r.waves, static_cast<long long>(Finished(r.counts)),
                  static_cast<long long>(r.total));
    out += line;
    out += (r.reason ? ": " + *r.reason : "") + "\n";  // a gate's reason can be long
    if (bars) out += "  " + Bar(r.counts.succeeded, r.total, 50) + "\n";
    std::snprintf(line, sizeof line, "  %-4s %-9s %8s %7s %11s %9s %6s %8s %9s %8s  %s\n", "WAVE",
                  "STATE", "PLANNED", "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED",
                  "TIMED_OUT", "CANCELED", "VERDICT");
    out += line;
    for (const auto& w : d.waves) {
      const auto& c = w.counts;
      std::snprintf(line, sizeof line,
                    "  %-4d %-9s %8lld %7lld %11lld %9lld %6lld %8lld %9lld %8lld  %s\n", w.wave,
                    w.state.c_str(), static_cast<long long>(w.planned),
                    static_cast<long long>(c.queued), static_cast<long long>(c.in_progress),
                    static_cast<long long>(c.succeeded), static_cast<long long>(c.failed),
                    static_cast<long long>(c.rejected), static_cast<long long>(c.timed_out),
                    static_cast<long long>(c.canceled), OrDash(w.verdict).c_str());
      out += line;
    }
    for (const auto& a : d.approvals) {
      out += "  wave " + std::to_string(a.wave) + " awaits approval (" +
             (a.expired ? "expired " : "expires ") + a.expires_at + ")";
      if (auto links = LinksOf(d, a)) out += ": open " + links->page + " to approve or deny it";
      out += "; or `fleetwave rollout approve|deny " + r.id + "`\n";
    }
  }
  return out;
}

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

bool AllTerminal(const db::Status& s) {
  if (!s.cycle || !s.cycle->planned_at) return false;
  for (const auto& d : s.rollouts) {
    const auto& st = d.rollout.state;
    if (st != "completed" && st != "aborted" && st != "superseded") return false;
  }
  return true;
}

}  // namespace

void AddStatus(CLI::App& app, Globals& g) {
  {
    auto* cmd = app.add_subcommand("status", "Show where every rollout stands (from the database)");
    cmd->footer(
        "The running cycle (or the latest), the leader and its heartbeat, each rollout of the\n"
        "cycle with its waves and execution counts, and pending approvals with their links.\n"
        "Reads the database only: works while no controller runs.\n"
        "--json: the schema documented in README (\"Status as JSON\"), the same as\n"
        "GET /api/v1/status.\n"
        "Example:\n  fleetwave status\n  fleetwave status --json | jq '.rollouts[].state'");
    auto json = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json, "One JSON object (schema in README)");
    cmd->callback([&g, json] {
      auto conn = OpenDatabase(g);
      db::Status s = db::ReadStatus(*conn);
      if (*json) {
        std::puts(ToJson(s).dump(2).c_str());
      } else {
        std::fputs(Render(s, false).c_str(), stdout);
      }
    });
  }
  {
    auto* cmd = app.add_subcommand("watch", "Show the status live until Ctrl-C");
    cmd->footer(
        "Redraws `fleetwave status` with a progress bar per rollout on a terminal; when the\n"
        "output is not a terminal, prints the status again each time it changes.\n"
        "Example:\n  fleetwave watch\n  fleetwave watch --interval-ms 500 --until-done");
    auto interval_ms = std::make_shared<int>(1000);
    cmd->add_option("--interval-ms", *interval_ms, "Time between reads of the database")
        ->capture_default_str()
        ->check(CLI::Range(100, 3600000));
    auto until_done = std::make_shared<bool>(false);
    cmd->add_flag(
        "--until-done", *until_done,
        "Exit once every rollout of the cycle has ended (completed, aborted, superseded)");
    auto count = std::make_shared<int>(0);
    cmd->add_option("--count", *count, "Exit after this many reads (0: no limit)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1000000));
    cmd->callback([&g, interval_ms, until_done, count] {
      signal(SIGINT, OnSignal);
      signal(SIGTERM, OnSignal);
      const bool tty = isatty(STDOUT_FILENO) == 1;
      auto conn = OpenDatabase(g);
      std::string last;
      for (int reads = 1; !g_stop; ++reads) {
        db::Status s;
        std::string text;
        try {
          s = db::ReadStatus(*conn);
          text = Render(s, tty);
        } catch (const db::Unavailable& e) {
          text = std::string("database unavailable, retrying: ") + e.what() + "\n";
          try {
            conn = OpenDatabase(g);
          } catch (const db::Error&) {
          }
        }
        if (tty) {
          std::printf("\033[H\033[2J%s\n(every %d ms; Ctrl-C to stop)\n", text.c_str(),
                      *interval_ms);
        } else if (text != last) {
          std::printf("---- %s\n%s", s.now.c_str(), text.c_str());
        }
        std::fflush(stdout);
        last = std::move(text);
        if ((*until_done && AllTerminal(s)) || (*count > 0 && reads >= *count)) break;
        for (int slept = 0; slept < *interval_ms && !g_stop; slept += 50)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
}

}  // namespace controller
