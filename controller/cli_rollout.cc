// `fleetwave rollout list|show|pause|resume|abort|approve|deny` and `fleetwave history`: what an
// operator reads and decides. The commands change the database only; the controller reads the
// truth on its next reconcile pass and acts on it.
#include <pwd.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "controller/approval_links.h"
#include "controller/cli_common.h"
#include "controller/status_json.h"
#include "db/connection.h"
#include "db/rollout_queries.h"
#include "fleet/rollout_machine.h"

namespace controller {
namespace {

using Json = nlohmann::json;

std::string OrDash(const std::optional<std::string>& s) { return s ? *s : "-"; }

// The positive integer value of `option` (e.g. --cycle 3), or nullopt when it was not given.
std::optional<int64_t> ParsePositive(const CLI::Option* option, const std::string& text,
                                     const char* example) {
  if (option->count() == 0) return std::nullopt;
  const std::string flag = option->get_name();
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || value <= 0)
    throw UsageError(flag + " \"" + text + "\" is invalid: use a positive integer, e.g. " + flag +
                     " " + example);
  return value;
}

// Rollout ids as the schema allows them: 1 to 64 of A-Z a-z 0-9 _ . : -
void CheckRolloutId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (char c : id) {
    ok = ok && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '.' || c == ':' || c == '-');
  }
  if (!ok)
    throw UsageError("rollout id \"" + id +
                     "\" is invalid: use 1 to 64 of A-Z a-z 0-9 _ . : - , e.g. fw-arm-v2-1.5.0-c3 "
                     "(`fleetwave rollout list` shows them)");
}

// Who an operator command is recorded as: "cli:" and the login name.
std::string Actor() {
  const char* user = std::getenv("USER");
  if (user && *user) return std::string("cli:") + user;
  if (const passwd* pw = getpwuid(geteuid()); pw && pw->pw_name)
    return "cli:" + std::string(pw->pw_name);
  return "cli:uid" + std::to_string(geteuid());
}

std::string Text(const Json& detail, const char* key) {
  auto it = detail.find(key);
  if (it == detail.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// "running → paused", "→ running" or "-".
std::string Change(const db::HistoryEvent& e) {
  if (!e.from_state && !e.to_state) return "-";
  return (e.from_state ? *e.from_state + " " : "") + "→ " + e.to_state.value_or("?");
}

// The reason, and who did it when the reason does not say so already.
std::string Why(const Json& detail) {
  std::string reason = Text(detail, "reason");
  std::string actor = Text(detail, "actor");
  if (actor.empty()) actor = Text(detail, "by");
  if (reason.empty()) return actor.empty() ? "" : "by " + actor;
  if (!actor.empty() && reason.find(actor) == std::string::npos) reason += " (by " + actor + ")";
  return reason;
}

void PrintRolloutTable(const std::vector<db::RolloutSummary>& rollouts) {
  std::printf("%-32s %-6s %-16s %-14s %-17s %-6s %-7s %-9s %-7s %s\n", "ROLLOUT", "CYCLE", "MODEL",
              "VERSION", "STATE", "WAVE", "TOTAL", "SUCCEEDED", "FAILED", "TIMED_OUT");
  for (const auto& r : rollouts) {
    const std::string wave = std::to_string(r.current_wave) + "/" + std::to_string(r.waves);
    std::printf("%-32s %-6lld %-16s %-14s %-17s %-6s %-7lld %-9lld %-7lld %lld\n", r.id.c_str(),
                static_cast<long long>(r.cycle_id), r.model.c_str(), r.version.c_str(),
                r.state.c_str(), wave.c_str(), static_cast<long long>(r.total),
                static_cast<long long>(r.counts.succeeded), static_cast<long long>(r.counts.failed),
                static_cast<long long>(r.counts.timed_out));
  }
}

std::string CountsLine(const db::ExecutionCounts& c) {
  return std::to_string(c.queued) + " queued, " + std::to_string(c.in_progress) + " in progress, " +
         std::to_string(c.succeeded) + " succeeded, " + std::to_string(c.failed) + " failed, " +
         std::to_string(c.rejected) + " rejected, " + std::to_string(c.timed_out) + " timed out, " +
         std::to_string(c.canceled) + " canceled";
}

void PrintRollout(const db::RolloutDetail& d) {
  const auto& r = d.rollout;
  std::printf("rollout:    %s\ncycle:      %lld\nrelease:    %s %s (%s)\nstate:      %s\n",
              r.id.c_str(), static_cast<long long>(r.cycle_id), r.model.c_str(), r.version.c_str(),
              d.release_state.c_str(), r.state.c_str());
  std::printf("reason:     %s\nwave:       %d of %d\ndevices:    %lld targeted: %s\n",
              OrDash(r.reason).c_str(), r.current_wave, r.waves, static_cast<long long>(r.total),
              CountsLine(r.counts).c_str());
  std::printf("created:    %s\nfinished:   %s\nplan:       %s\n", r.created_at.c_str(),
              OrDash(r.finished_at).c_str(), d.plan.dump().c_str());
  std::printf("\n%-5s %-8s %-9s %-7s %-11s %-9s %-7s %-8s %-9s %-8s %-21s %-20s %s\n", "WAVE",
              "PLANNED", "STATE", "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED",
              "TIMED_OUT", "CANCELED", "VERDICT", "STARTED", "FINISHED");
  for (const auto& w : d.waves) {
    const auto& c = w.counts;
    std::printf(
        "%-5d %-8lld %-9s %-7lld %-11lld %-9lld %-7lld %-8lld %-9lld %-8lld %-21s %-20s %s\n",
        w.wave, static_cast<long long>(w.planned), w.state.c_str(),
        static_cast<long long>(c.queued), static_cast<long long>(c.in_progress),
        static_cast<long long>(c.succeeded), static_cast<long long>(c.failed),
        static_cast<long long>(c.rejected), static_cast<long long>(c.timed_out),
        static_cast<long long>(c.canceled), OrDash(w.verdict).c_str(), OrDash(w.started_at).c_str(),
        OrDash(w.finished_at).c_str());
  }
  if (d.approvals.empty()) return;
  std::printf("\npending approvals:\n");
  for (const auto& a : d.approvals) {
    std::printf("  wave %d: requested %s, %s %s\n", a.wave, a.created_at.c_str(),
                a.expired ? "expired" : "expires", a.expires_at.c_str());
    if (auto links = LinksOf(d, a)) std::printf("    open %s to decide\n", links->page.c_str());
  }
  std::printf("decide with `fleetwave rollout approve %s` or `fleetwave rollout deny %s`\n",
              r.id.c_str(), r.id.c_str());
}

// One line per further change an operator command made beside the rollout's own.
void PrintConsequence(const db::HistoryEvent& e) {
  const std::string to = e.to_state.value_or("?");
  const std::string from = e.from_state.value_or("?");
  if (e.kind == "release_halted") {
    const Json& release = e.detail.contains("release") ? e.detail["release"] : Json::object();
    const std::string model = Text(release, "model"), version = Text(release, "version");
    std::printf(
        "  release %s %s: %s (was %s); later cycles skip it until `fleetwave release resume "
        "--model %s --version %s`\n",
        model.c_str(), version.c_str(), to.c_str(), from.c_str(), model.c_str(), version.c_str());
  } else if (e.kind == "approval_granted" || e.kind == "approval_denied") {
    std::printf("  approval of wave %d: %s\n", e.wave.value_or(0), to.c_str());
  } else if (e.wave) {
    std::printf("  wave %d: %s (was %s)\n", *e.wave, to.c_str(), from.c_str());
  } else {
    std::printf("  %s: %s (was %s)\n", e.kind.c_str(), to.c_str(), from.c_str());
  }
}

void AddRolloutCommands(CLI::App& parent, Globals& g) {
  auto* rollout = parent.add_subcommand("rollout",
                                        "Inspect rollouts and pause, resume, abort, "
                                        "approve or deny them");
  rollout->footer(
      "A rollout is one release rolled out in one cycle (the job devices see), in waves.\n"
      "Example:\n  fleetwave rollout list\n  fleetwave rollout pause fw-arm-v2-1.5.0-c3");
  rollout->require_subcommand(1);

  {
    auto* cmd = rollout->add_subcommand("list", "List rollouts, newest cycle first");
    cmd->footer(
        "Columns: id, cycle, model, version, state, current wave / waves, devices targeted, and\n"
        "executions succeeded, failed and timed out (fleetwave.rollout_status).\n"
        "--json: an array of objects with keys id, cycle, model, version, state, currentWave,\n"
        "waveCount, total, executions {queued, inProgress, succeeded, failed, rejected, timedOut,\n"
        "canceled}, reason, createdAt, finishedAt (ISO 8601 UTC; null when unset).\n"
        "Example:\n  fleetwave rollout list --cycle 3\n  fleetwave rollout list --json");
    auto cycle = std::make_shared<std::string>();
    auto* cycle_option =
        cmd->add_option("--cycle", *cycle, "Only the rollouts of this cycle (its id)")
            ->type_name("N");
    auto json = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json, "A JSON array of rollout objects");
    cmd->callback([&g, cycle, cycle_option, json] {
      const auto cycle_id = ParsePositive(cycle_option, *cycle, "3");
      auto conn = OpenDatabase(g);
      auto rollouts = db::ListRollouts(*conn, cycle_id);
      if (*json) {
        Json out = Json::array();
        for (const auto& r : rollouts) out.push_back(ToJson(r));
        std::puts(out.dump(2).c_str());
        return;
      }
      PrintRolloutTable(rollouts);
    });
  }

  {
    auto* cmd = rollout->add_subcommand("show", "Show one rollout: its plan, waves and approvals");
    cmd->footer(
        "--json: the keys of `rollout list --json`, plus releaseState, plan (as stored), waves\n"
        "[{wave, planned, state, executions, verdict, startedAt, finishedAt}] and\n"
        "pendingApprovals [{wave, createdAt, expiresAt, expired}].\n"
        "Example:\n  fleetwave rollout show fw-arm-v2-1.5.0-c3");
    auto id = std::make_shared<std::string>();
    cmd->add_option("rollout", *id, "Rollout id, e.g. fw-arm-v2-1.5.0-c3")
        ->type_name("ID")
        ->required();
    auto json = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json, "A JSON object");
    cmd->callback([&g, id, json] {
      CheckRolloutId(*id);
      auto conn = OpenDatabase(g);
      db::RolloutDetail detail = db::ShowRollout(*conn, *id);
      if (*json) {
        std::puts(ToJson(detail).dump(2).c_str());
        return;
      }
      PrintRollout(detail);
    });
  }

  for (auto [name, event, what, effect] : {
           std::tuple{"pause", fleet::Event::kOperatorPause,
                      "Pause a running rollout, or one awaiting approval",
                      "No further wave starts; the wave under way is still watched, and its gate\n"
                      "can still fail it. `rollout resume` goes on."},
           std::tuple{"resume", fleet::Event::kOperatorResume, "Resume a paused rollout",
                      "The next wave starts. A wave a gate failed stays failed: resuming accepts\n"
                      "its failures (abort criteria count the later waves only)."},
           std::tuple{"abort", fleet::Event::kOperatorAbort,
                      "Abort a rollout: cancel its unfinished waves, halt its release",
                      "Its queued executions are canceled and their devices notified; the release\n"
                      "is halted, so later cycles skip it until `fleetwave release resume`."},
           std::tuple{
               "approve", fleet::Event::kApproved, "Approve the wave a rollout awaits",
               "Applies to a rollout awaiting approval: the pending approval is granted and\n"
               "the wave starts."},
           std::tuple{
               "deny", fleet::Event::kDenied, "Deny the wave a rollout awaits: abort the rollout",
               "Applies to a rollout awaiting approval: the pending approval is denied, the\n"
               "rollout aborted and its release halted, as `rollout abort` does."},
       }) {
    auto* cmd = rollout->add_subcommand(name, what);
    cmd->footer(std::string(effect) +
                "\nThe change is made in the database at once and recorded in the history with\n"
                "your login name; the controller acts on it within one reconcile pass.\n"
                "Example:\n  fleetwave rollout " +
                name + " fw-arm-v2-1.5.0-c3");
    auto id = std::make_shared<std::string>();
    cmd->add_option("rollout", *id, "Rollout id, e.g. fw-arm-v2-1.5.0-c3")
        ->type_name("ID")
        ->required();
    cmd->callback([&g, id, event = event] {
      CheckRolloutId(*id);
      auto conn = OpenDatabase(g);
      db::OperatorResult r = db::RunOperatorCommand(*conn, *id, event, Actor());
      std::printf("rollout %s: %s (was %s)\n", id->c_str(), r.to.c_str(), r.from.c_str());
      // Then what followed from it: approvals and waves first, the release last.
      for (bool release : {false, true}) {
        for (const auto& e : r.events) {
          if (!e.wave && e.kind == fleet::ToString(event)) continue;  // the line above
          if ((e.kind == "release_halted") == release) PrintConsequence(e);
        }
      }
    });
  }
}

void AddHistory(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("history", "Show the execution history: every state change");
  cmd->footer(
      "The events of the latest cycle by default, or of --cycle, --rollout, or both, oldest\n"
      "first. One line each: time (UTC), cycle, rollout, wave, kind, from → to, and the reason\n"
      "and who acted.\n"
      "--json: an array of objects with keys id, at (ISO 8601 UTC), cycle, rollout, wave, kind,\n"
      "from, to (null when unset) and detail (an object: reason, actor, ...).\n"
      "Example:\n  fleetwave history\n  fleetwave history --rollout fw-arm-v2-1.5.0-c3 --json\n"
      "  fleetwave history --cycle 3 --limit 50");
  auto cycle = std::make_shared<std::string>();
  auto* cycle_option =
      cmd->add_option("--cycle", *cycle, "Events of this cycle (its id)")->type_name("N");
  auto rollout = std::make_shared<std::string>();
  auto* rollout_option =
      cmd->add_option("--rollout", *rollout, "Events of this rollout")->type_name("ID");
  auto limit = std::make_shared<std::string>();
  auto* limit_option = cmd->add_option("--limit", *limit, "Only the last N events")->type_name("N");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "A JSON array of event objects");
  cmd->callback([&g, cycle, cycle_option, rollout, rollout_option, limit, limit_option, json] {
    db::HistoryQuery query;
    query.cycle_id = ParsePositive(cycle_option, *cycle, "3");
    query.limit = ParsePositive(limit_option, *limit, "50");
    if (rollout_option->count() > 0) {
      CheckRolloutId(*rollout);
      query.rollout_id = *rollout;
    }
    auto conn = OpenDatabase(g);
    db::History h = db::ReadHistory(*conn, query);
    if (*json) {
      Json out = Json::array();
      for (const auto& e : h.events) out.push_back(ToJson(e));
      std::puts(out.dump(2).c_str());
      return;
    }
    if (!query.cycle_id && !query.rollout_id) {
      if (!h.cycle_id) {
        std::puts("no cycle has started yet");
        return;
      }
      std::printf("cycle %lld, the latest (--cycle N for another, --rollout ID for one rollout)\n",
                  static_cast<long long>(*h.cycle_id));
    }
    std::printf("%-20s %-6s %-32s %-4s %-22s %-30s %s\n", "AT", "CYCLE", "ROLLOUT", "WAVE", "KIND",
                "CHANGE", "DETAIL");
    for (const auto& e : h.events) {
      // Pad by characters, not bytes: the arrow is three bytes of UTF-8.
      std::string change = Change(e);
      const size_t width = change.size() - (change.find("→") == std::string::npos ? 0 : 2);
      if (width < 30) change.append(30 - width, ' ');
      const std::string cycle_text = e.cycle_id ? std::to_string(*e.cycle_id) : "-";
      const std::string wave_text = e.wave ? std::to_string(*e.wave) : "-";
      std::printf("%-20s %-6s %-32s %-4s %-22s %s %s\n", e.at.c_str(), cycle_text.c_str(),
                  OrDash(e.rollout_id).c_str(), wave_text.c_str(), e.kind.c_str(), change.c_str(),
                  Why(e.detail).c_str());
    }
  });
}

}  // namespace

void AddRollout(CLI::App& app, Globals& g) {
  AddRolloutCommands(app, g);
  AddHistory(app, g);
}

}  // namespace controller
