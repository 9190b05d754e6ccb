#include "fleet/rollout_machine.h"

#include "fleet/wave_planner.h"

#include <algorithm>

namespace fleet {
namespace {

using C = CycleState;
using R = RolloutState;
using W = WaveState;
using E = Event;

// One row per line: clang-format would pack them.
// clang-format off
// The tables. Everything the machines may do is here; the controller never changes a state
// except through Next(), so a transition that is not a row cannot happen.
constexpr Transition<C> kCycleTable[] = {
    {C::kRunning, E::kAllRolloutsTerminal, C::kCompleted},
};

constexpr Transition<R> kRolloutTable[] = {
    {R::kRunning, E::kWaveStarted, R::kRunning},
    {R::kRunning, E::kApprovalRequired, R::kAwaitingApproval},
    {R::kAwaitingApproval, E::kApproved, R::kRunning},
    {R::kAwaitingApproval, E::kDenied, R::kAborted},
    {R::kAwaitingApproval, E::kApprovalExpired, R::kPaused},
    {R::kRunning, E::kGateFailedPause, R::kPaused},
    // A wave keeps being watched while its rollout is paused; its failure still counts.
    {R::kPaused, E::kGateFailedPause, R::kPaused},
    {R::kRunning, E::kGateFailedAbort, R::kAborted},
    {R::kPaused, E::kGateFailedAbort, R::kAborted},
    {R::kRunning, E::kOperatorPause, R::kPaused},
    {R::kAwaitingApproval, E::kOperatorPause, R::kPaused},
    {R::kPaused, E::kOperatorResume, R::kRunning},
    {R::kRunning, E::kOperatorAbort, R::kAborted},
    {R::kAwaitingApproval, E::kOperatorAbort, R::kAborted},
    {R::kPaused, E::kOperatorAbort, R::kAborted},
    {R::kRunning, E::kSuperseded, R::kSuperseded},
    {R::kAwaitingApproval, E::kSuperseded, R::kSuperseded},
    {R::kPaused, E::kSuperseded, R::kSuperseded},
    {R::kRunning, E::kAllWavesPassed, R::kCompleted},
};

constexpr Transition<W> kWaveTable[] = {
    {W::kPending, E::kWaveStarted, W::kRunning},
    {W::kRunning, E::kThresholdMet, W::kSoaking},
    {W::kSoaking, E::kGatePassed, W::kPassed},
    {W::kRunning, E::kGateFailedPause, W::kFailed},
    {W::kSoaking, E::kGateFailedPause, W::kFailed},
    {W::kRunning, E::kGateFailedAbort, W::kFailed},
    {W::kSoaking, E::kGateFailedAbort, W::kFailed},
    {W::kPending, E::kWaveCanceled, W::kCanceled},
    {W::kRunning, E::kWaveCanceled, W::kCanceled},
    {W::kSoaking, E::kWaveCanceled, W::kCanceled},
};
// clang-format on

constexpr std::string_view kEventNames[] = {
    "wave_started",         "threshold_met",     "gate_passed",
    "gate_failed_pause",    "gate_failed_abort", "wave_canceled",
    "approval_required",    "approved",          "denied",
    "approval_expired",     "operator_pause",    "operator_resume",
    "operator_abort",       "superseded",        "all_waves_passed",
    "all_rollouts_terminal"};
static_assert(std::size(kEventNames) == std::size(kEvents));

template <typename State, size_t N>
std::optional<State> Lookup(const Transition<State> (&table)[N], State from, Event event) {
  for (const Transition<State>& t : table)
    if (t.from == from && t.event == event) return t.to;
  return std::nullopt;
}

template <typename State, size_t N>
bool HasExit(const Transition<State> (&table)[N], State from) {
  for (const Transition<State>& t : table)
    if (t.from == from) return true;
  return false;
}

template <typename State, size_t N>
std::optional<State> ParseState(const State (&states)[N], std::string_view text) {
  for (State s : states)
    if (ToString(s) == text) return s;
  return std::nullopt;
}

template <typename State, size_t N, size_t M>
std::string Mermaid(const Transition<State> (&table)[N], const State (&states)[M], State initial) {
  std::string out = "stateDiagram-v2\n";
  out += "    [*] --> " + std::string(ToString(initial)) + "\n";
  for (const Transition<State>& t : table)
    out += "    " + std::string(ToString(t.from)) + " --> " + std::string(ToString(t.to)) + " : " +
           std::string(ToString(t.event)) + "\n";
  for (State s : states)
    if (!HasExit(table, s)) out += "    " + std::string(ToString(s)) + " --> [*]\n";
  return out;
}

template <typename State, size_t N>
std::string Markdown(const Transition<State> (&table)[N]) {
  std::string out = "| from | event | to |\n|---|---|---|\n";
  for (const Transition<State>& t : table)
    out += "| " + std::string(ToString(t.from)) + " | " + std::string(ToString(t.event)) + " | " +
           std::string(ToString(t.to)) + " |\n";
  return out;
}

bool IsActive(WaveState s) { return s == W::kRunning || s == W::kSoaking; }

constexpr char kNewerRelease[] = "a newer release of the model is active";

}  // namespace

std::string_view ToString(CycleState state) {
  return state == C::kRunning ? "running" : "completed";
}

std::string_view ToString(RolloutState state) {
  switch (state) {
    case R::kRunning:
      return "running";
    case R::kAwaitingApproval:
      return "awaiting_approval";
    case R::kPaused:
      return "paused";
    case R::kCompleted:
      return "completed";
    case R::kAborted:
      return "aborted";
    case R::kSuperseded:
      return "superseded";
  }
  return "running";
}

std::string_view ToString(WaveState state) {
  switch (state) {
    case W::kPending:
      return "pending";
    case W::kRunning:
      return "running";
    case W::kSoaking:
      return "soaking";
    case W::kPassed:
      return "passed";
    case W::kFailed:
      return "failed";
    case W::kCanceled:
      return "canceled";
  }
  return "pending";
}

std::string_view ToString(Event event) { return kEventNames[static_cast<size_t>(event)]; }

std::optional<CycleState> ParseCycleState(std::string_view text) {
  return ParseState(kCycleStates, text);
}
std::optional<RolloutState> ParseRolloutState(std::string_view text) {
  return ParseState(kRolloutStates, text);
}
std::optional<WaveState> ParseWaveState(std::string_view text) {
  return ParseState(kWaveStates, text);
}

std::optional<Event> ParseEvent(std::string_view text) {
  for (Event e : kEvents)
    if (ToString(e) == text) return e;
  return std::nullopt;
}

std::span<const Transition<CycleState>> CycleTransitions() { return kCycleTable; }
std::span<const Transition<RolloutState>> RolloutTransitions() { return kRolloutTable; }
std::span<const Transition<WaveState>> WaveTransitions() { return kWaveTable; }

std::optional<CycleState> Next(CycleState from, Event event) {
  return Lookup(kCycleTable, from, event);
}
std::optional<RolloutState> Next(RolloutState from, Event event) {
  return Lookup(kRolloutTable, from, event);
}
std::optional<WaveState> Next(WaveState from, Event event) {
  return Lookup(kWaveTable, from, event);
}

bool IsTerminal(CycleState state) { return !HasExit(kCycleTable, state); }
bool IsTerminal(RolloutState state) { return !HasExit(kRolloutTable, state); }
bool IsTerminal(WaveState state) { return !HasExit(kWaveTable, state); }

EntryActions OnEnter(RolloutState state) {
  if (state == R::kAborted) return {true, true};
  if (state == R::kSuperseded || state == R::kCompleted) return {true, false};
  return {};
}

std::string_view ToString(Machine machine) {
  switch (machine) {
    case Machine::kCycle:
      return "cycle";
    case Machine::kRollout:
      return "rollout";
    case Machine::kWave:
      return "wave";
  }
  return "cycle";
}

std::string RenderMermaid(Machine machine) {
  switch (machine) {
    case Machine::kCycle:
      return Mermaid(kCycleTable, kCycleStates, C::kRunning);
    case Machine::kRollout:
      return Mermaid(kRolloutTable, kRolloutStates, R::kRunning);
    case Machine::kWave:
      return Mermaid(kWaveTable, kWaveStates, W::kPending);
  }
  return "";
}

std::string RenderMarkdown(Machine machine) {
  switch (machine) {
    case Machine::kCycle:
      return Markdown(kCycleTable);
    case Machine::kRollout:
      return Markdown(kRolloutTable);
    case Machine::kWave:
      return Markdown(kWaveTable);
  }
  return "";
}

std::optional<std::vector<Change>> ApplyRolloutEvent(const RolloutSnapshot& snapshot, Event event) {
  std::optional<RolloutState> to = Next(snapshot.state, event);
  if (!to) return std::nullopt;
  std::vector<Change> changes = {{0, event, ToString(snapshot.state), ToString(*to)}};
  // A rollout that ends early takes its unfinished waves with it, so no wave is left "running"
  // under a finished rollout.
  if (*to == R::kAborted || *to == R::kSuperseded) {
    for (size_t i = 0; i < snapshot.waves.size(); ++i) {
      std::optional<WaveState> wave_to = Next(snapshot.waves[i], E::kWaveCanceled);
      if (wave_to)
        changes.push_back({static_cast<int>(i) + 1, E::kWaveCanceled, ToString(snapshot.waves[i]),
                           ToString(*wave_to)});
    }
  }
  return changes;
}

PassDecision DecideWave(const Plan& plan, const RolloutSnapshot& snapshot,
                        const std::optional<GateDecision>& gate, int64_t now) {
  PassDecision out;
  if (IsTerminal(snapshot.state)) return out;
  // Work on a copy so each change sees the states the earlier ones left.
  RolloutSnapshot s = snapshot;
  auto wave_event = [&](int k, Event e, const std::string& reason) {
    std::optional<WaveState> to = Next(s.waves[k - 1], e);
    if (!to) return false;
    out.changes.push_back({k, e, ToString(s.waves[k - 1]), ToString(*to), reason});
    s.waves[k - 1] = *to;
    return true;
  };
  auto rollout_event = [&](Event e, const std::string& reason) {
    std::optional<std::vector<Change>> changes = ApplyRolloutEvent(s, e);
    if (!changes) return false;
    for (Change& c : *changes) {
      c.reason = reason;
      if (c.wave == 0) {
        s.state = *ParseRolloutState(c.to);
      } else {
        s.waves[c.wave - 1] = *ParseWaveState(c.to);
      }
      out.changes.push_back(std::move(c));
    }
    return true;
  };

  int active = 0;
  for (size_t i = 0; i < s.waves.size() && !active; ++i)
    if (IsActive(s.waves[i])) active = static_cast<int>(i) + 1;

  if (active && gate) {
    out.threshold_met_at = gate->threshold_met_at;
    out.recheck_at = gate->recheck_at;
    const std::string& why = gate->reason;
    switch (gate->verdict) {
      case GateVerdict::kWatch:
        break;
      case GateVerdict::kSoaking:
        if (s.waves[active - 1] == W::kRunning) wave_event(active, E::kThresholdMet, why);
        break;
      case GateVerdict::kPassed:
      case GateVerdict::kPassedWithFailures:
        if (s.waves[active - 1] == W::kRunning) wave_event(active, E::kThresholdMet, why);
        wave_event(active, E::kGatePassed, why);
        out.verdict = gate->verdict;
        out.verdict_wave = active;
        out.recheck_at = now;  // the next wave can start at once
        active = 0;
        break;
      case GateVerdict::kFailed: {
        Event e = gate->action == GateAction::kAbort ? E::kGateFailedAbort : E::kGateFailedPause;
        wave_event(active, e, why);
        rollout_event(e, "wave " + std::to_string(active) + " failed: " + why);
        out.verdict = gate->verdict;
        out.verdict_wave = active;
        out.recheck_at.reset();
        return out;
      }
    }
  }
  if (active) return out;

  if (s.state == R::kRunning) {
    auto pending = std::find(s.waves.begin(), s.waves.end(), W::kPending);
    if (pending == s.waves.end()) {
      rollout_event(E::kAllWavesPassed, "every wave has finished");
      return out;
    }
    // A newer release replaces this one between waves, never in the middle of one.
    if (s.newer_release) {
      rollout_event(E::kSuperseded, kNewerRelease);
      return out;
    }
    int next = static_cast<int>(pending - s.waves.begin()) + 1;
    bool needs_approval = plan.approval && std::find(plan.approval->before_waves.begin(),
                                                     plan.approval->before_waves.end(),
                                                     next) != plan.approval->before_waves.end();
    if (needs_approval && s.approved_wave != next) {
      rollout_event(E::kApprovalRequired, "wave " + std::to_string(next) + " needs approval");
      return out;
    }
    std::string started = "wave " + std::to_string(next) + " started";
    wave_event(next, E::kWaveStarted, started);
    rollout_event(E::kWaveStarted, started);
    out.recheck_at = now;  // queue and notify the wave's devices
    return out;
  }
  if (s.newer_release) rollout_event(E::kSuperseded, kNewerRelease);  // awaiting approval, paused
  return out;
}

std::optional<Event> DecideCycle(CycleState state, const std::vector<RolloutState>& rollouts) {
  if (state != C::kRunning) return std::nullopt;
  for (RolloutState r : rollouts)
    if (!IsTerminal(r)) return std::nullopt;
  return E::kAllRolloutsTerminal;
}

std::string RolloutId(std::string_view model, std::string_view version, int64_t cycle) {
  std::string name = "fw-" + std::string(model) + "-" + std::string(version);
  const std::string suffix = "-c" + std::to_string(cycle);
  for (char& c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) c = '_';
  }
  // "fw-a-b-1.0.0" could be model "a" with version "b-1.0.0" or model "a-b" with "1.0.0":
  // a model with a '-' (versions have none before their prerelease) gets the hash too.
  constexpr size_t kMax = 64;
  const bool ambiguous = model.find('-') != std::string_view::npos;
  if (ambiguous || name.size() + suffix.size() > kMax) {
    const std::string hash =
        "-" + Md5Hex(std::string(model) + "/" + std::string(version)).substr(0, 8);
    name = name.substr(0, std::min(name.size(), kMax - suffix.size() - hash.size())) + hash;
  }
  return name + suffix;
}

}  // namespace fleet
