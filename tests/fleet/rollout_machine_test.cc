#include "fleet/rollout_machine.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <tuple>

#include <gtest/gtest.h>

namespace fleet {
namespace {

using C = CycleState;
using R = RolloutState;
using W = WaveState;
using E = Event;

// ---- Names ------------------------------------------------------------------------------------

TEST(Names, StatesMatchTheDatabaseCheckConstraints) {
  std::vector<std::string> cycle, rollout, wave;
  for (C s : kCycleStates) cycle.emplace_back(ToString(s));
  for (R s : kRolloutStates) rollout.emplace_back(ToString(s));
  for (W s : kWaveStates) wave.emplace_back(ToString(s));
  EXPECT_EQ(cycle, (std::vector<std::string>{"running", "completed"}));
  EXPECT_EQ(rollout, (std::vector<std::string>{"running", "awaiting_approval", "paused",
                                               "completed", "aborted", "superseded"}));
  EXPECT_EQ(wave, (std::vector<std::string>{"pending", "running", "soaking", "passed", "failed",
                                            "canceled"}));
  for (C s : kCycleStates) EXPECT_EQ(ParseCycleState(ToString(s)), s);
  for (R s : kRolloutStates) EXPECT_EQ(ParseRolloutState(ToString(s)), s);
  for (W s : kWaveStates) EXPECT_EQ(ParseWaveState(ToString(s)), s);
  EXPECT_FALSE(ParseCycleState("Running"));
  EXPECT_FALSE(ParseRolloutState("awaiting-approval"));
  EXPECT_FALSE(ParseWaveState(""));
  EXPECT_FALSE(ParseWaveState("cancelled"));
}

TEST(Names, Events) {
  std::vector<std::string> names;
  for (E e : kEvents) names.emplace_back(ToString(e));
  EXPECT_EQ(names,
            (std::vector<std::string>{"wave_started", "threshold_met", "gate_passed",
                                      "gate_failed_pause", "gate_failed_abort", "wave_canceled",
                                      "approval_required", "approved", "denied", "approval_expired",
                                      "operator_pause", "operator_resume", "operator_abort",
                                      "superseded", "all_waves_passed", "all_rollouts_terminal"}));
  for (E e : kEvents) EXPECT_EQ(ParseEvent(ToString(e)), e);
  EXPECT_FALSE(ParseEvent("WaveStarted"));
  EXPECT_EQ(ToString(Machine::kCycle), "cycle");
  EXPECT_EQ(ToString(Machine::kRollout), "rollout");
  EXPECT_EQ(ToString(Machine::kWave), "wave");
}

// ---- The tables, every (state, event) pair -----------------------------------------------------
// The expected rows are written out again here on purpose: a change to a table must be made twice.

TEST(CycleTable, EveryPair) {
  const std::map<std::pair<C, E>, C> allowed = {
      {{C::kRunning, E::kAllRolloutsTerminal}, C::kCompleted},
  };
  for (C s : kCycleStates)
    for (E e : kEvents) {
      auto it = allowed.find({s, e});
      std::optional<C> expected;
      if (it != allowed.end()) expected = it->second;
      EXPECT_EQ(Next(s, e), expected) << ToString(s) << " + " << ToString(e);
    }
  EXPECT_EQ(CycleTransitions().size(), allowed.size());
}

TEST(RolloutTable, EveryPair) {
  const std::map<std::pair<R, E>, R> allowed = {
      {{R::kRunning, E::kWaveStarted}, R::kRunning},
      {{R::kRunning, E::kApprovalRequired}, R::kAwaitingApproval},
      {{R::kAwaitingApproval, E::kApproved}, R::kRunning},
      {{R::kAwaitingApproval, E::kDenied}, R::kAborted},
      {{R::kAwaitingApproval, E::kApprovalExpired}, R::kPaused},
      {{R::kRunning, E::kGateFailedPause}, R::kPaused},
      {{R::kPaused, E::kGateFailedPause}, R::kPaused},
      {{R::kRunning, E::kGateFailedAbort}, R::kAborted},
      {{R::kPaused, E::kGateFailedAbort}, R::kAborted},
      {{R::kRunning, E::kOperatorPause}, R::kPaused},
      {{R::kAwaitingApproval, E::kOperatorPause}, R::kPaused},
      {{R::kPaused, E::kOperatorResume}, R::kRunning},
      {{R::kRunning, E::kOperatorAbort}, R::kAborted},
      {{R::kAwaitingApproval, E::kOperatorAbort}, R::kAborted},
      {{R::kPaused, E::kOperatorAbort}, R::kAborted},
      {{R::kRunning, E::kSuperseded}, R::kSuperseded},
      {{R::kAwaitingApproval, E::kSuperseded}, R::kSuperseded},
      {{R::kPaused, E::kSuperseded}, R::kSuperseded},
      {{R::kRunning, E::kAllWavesPassed}, R::kCompleted},
  };
  for (R s : kRolloutStates)
    for (E e : kEvents) {
      auto it = allowed.find({s, e});
      std::optional<R> expected;
      if (it != allowed.end()) expected = it->second;
      EXPECT_EQ(Next(s, e), expected) << ToString(s) << " + " << ToString(e);
    }
  EXPECT_EQ(RolloutTransitions().size(), allowed.size());
}

TEST(WaveTable, EveryPair) {
  const std::map<std::pair<W, E>, W> allowed = {
      {{W::kPending, E::kWaveStarted}, W::kRunning},
      {{W::kRunning, E::kThresholdMet}, W::kSoaking},
      {{W::kSoaking, E::kGatePassed}, W::kPassed},
      {{W::kRunning, E::kGateFailedPause}, W::kFailed},
      {{W::kSoaking, E::kGateFailedPause}, W::kFailed},
      {{W::kRunning, E::kGateFailedAbort}, W::kFailed},
      {{W::kSoaking, E::kGateFailedAbort}, W::kFailed},
      {{W::kPending, E::kWaveCanceled}, W::kCanceled},
      {{W::kRunning, E::kWaveCanceled}, W::kCanceled},
      {{W::kSoaking, E::kWaveCanceled}, W::kCanceled},
  };
  for (W s : kWaveStates)
    for (E e : kEvents) {
      auto it = allowed.find({s, e});
      std::optional<W> expected;
      if (it != allowed.end()) expected = it->second;
      EXPECT_EQ(Next(s, e), expected) << ToString(s) << " + " << ToString(e);
    }
  EXPECT_EQ(WaveTransitions().size(), allowed.size());
}

template <typename State>
void ExpectWellFormed(std::span<const Transition<State>> table, State initial,
                      std::span<const State> states) {
  // No two rows for one (from, event): the machine is deterministic.
  std::set<std::pair<State, Event>> keys;
  for (const auto& t : table) EXPECT_TRUE(keys.insert({t.from, t.event}).second);
  // Every state is reachable from the initial one, and every state can reach a terminal one.
  std::set<State> reached = {initial};
  for (size_t round = 0; round < states.size(); ++round)
    for (const auto& t : table)
      if (reached.count(t.from)) reached.insert(t.to);
  EXPECT_EQ(reached.size(), states.size());
  for (State s : states) {
    std::set<State> from = {s};
    bool terminal = false;
    for (size_t round = 0; round <= states.size(); ++round) {
      for (const auto& t : table)
        if (from.count(t.from)) from.insert(t.to);
    }
    for (State f : from) terminal = terminal || IsTerminal(f);
    EXPECT_TRUE(terminal) << ToString(s);
  }
}

TEST(Tables, AreDeterministicReachableAndEndable) {
  ExpectWellFormed(CycleTransitions(), C::kRunning, std::span<const C>(kCycleStates));
  ExpectWellFormed(RolloutTransitions(), R::kRunning, std::span<const R>(kRolloutStates));
  ExpectWellFormed(WaveTransitions(), W::kPending, std::span<const W>(kWaveStates));
}

TEST(Tables, TerminalStates) {
  EXPECT_FALSE(IsTerminal(C::kRunning));
  EXPECT_TRUE(IsTerminal(C::kCompleted));
  std::set<R> terminal_rollouts;
  for (R s : kRolloutStates)
    if (IsTerminal(s)) terminal_rollouts.insert(s);
  EXPECT_EQ(terminal_rollouts, (std::set<R>{R::kCompleted, R::kAborted, R::kSuperseded}));
  std::set<W> terminal_waves;
  for (W s : kWaveStates)
    if (IsTerminal(s)) terminal_waves.insert(s);
  EXPECT_EQ(terminal_waves, (std::set<W>{W::kPassed, W::kFailed, W::kCanceled}));
}

TEST(Tables, EntryActions) {
  for (R s : kRolloutStates) {
    EntryActions a = OnEnter(s);
    EXPECT_EQ(a.cancel_queued, s == R::kAborted || s == R::kSuperseded || s == R::kCompleted)
        << ToString(s);
    EXPECT_EQ(a.halt_release, s == R::kAborted) << ToString(s);
  }
}

TEST(Render, MermaidHasEveryRowAndTheEnds) {
  std::string m = RenderMermaid(Machine::kRollout);
  EXPECT_EQ(m.rfind("stateDiagram-v2\n", 0), 0u);
  EXPECT_NE(m.find("    [*] --> running\n"), std::string::npos);
  for (const auto& t : RolloutTransitions()) {
    std::string line = "    " + std::string(ToString(t.from)) + " --> " +
                       std::string(ToString(t.to)) + " : " + std::string(ToString(t.event)) + "\n";
    EXPECT_NE(m.find(line), std::string::npos) << line;
  }
  for (const char* end : {"completed", "aborted", "superseded"})
    EXPECT_NE(m.find("    " + std::string(end) + " --> [*]\n"), std::string::npos) << end;
  EXPECT_EQ(m.find("paused --> [*]"), std::string::npos);
  EXPECT_EQ(RenderMermaid(Machine::kCycle),
            "stateDiagram-v2\n    [*] --> running\n    running --> completed : "
            "all_rollouts_terminal\n    completed --> [*]\n");
  EXPECT_NE(RenderMermaid(Machine::kWave).find("    [*] --> pending\n"), std::string::npos);
}

TEST(Render, MarkdownTable) {
  EXPECT_EQ(
      RenderMarkdown(Machine::kCycle),
      "| from | event | to |\n|---|---|---|\n| running | all_rollouts_terminal | completed |\n");
  std::string w = RenderMarkdown(Machine::kWave);
  EXPECT_EQ(std::count(w.begin(), w.end(), '\n'), 2 + static_cast<long>(WaveTransitions().size()));
  EXPECT_NE(w.find("| soaking | gate_passed | passed |"), std::string::npos);
  EXPECT_NE(RenderMarkdown(Machine::kRollout).find("| awaiting_approval | denied | aborted |"),
            std::string::npos);
}

// ---- ApplyRolloutEvent -------------------------------------------------------------------------

using Step = std::tuple<int, std::string, std::string, std::string>;  // wave, event, from, to

std::vector<Step> Steps(const std::vector<Change>& changes) {
  std::vector<Step> steps;
  for (const Change& c : changes)
    steps.emplace_back(c.wave, ToString(c.event), std::string(c.from), std::string(c.to));
  return steps;
}

RolloutSnapshot Snapshot(R state, std::vector<W> waves) {
  RolloutSnapshot s;
  s.state = state;
  s.waves = std::move(waves);
  return s;
}

TEST(ApplyRolloutEvent, AbortCancelsUnfinishedWaves) {
  auto changes =
      ApplyRolloutEvent(Snapshot(R::kRunning, {W::kPassed, W::kSoaking, W::kPending, W::kPending}),
                        E::kOperatorAbort);
  ASSERT_TRUE(changes);
  EXPECT_EQ(Steps(*changes), (std::vector<Step>{{0, "operator_abort", "running", "aborted"},
                                                {2, "wave_canceled", "soaking", "canceled"},
                                                {3, "wave_canceled", "pending", "canceled"},
                                                {4, "wave_canceled", "pending", "canceled"}}));
  changes =
      ApplyRolloutEvent(Snapshot(R::kAwaitingApproval, {W::kPassed, W::kPending}), E::kDenied);
  ASSERT_TRUE(changes);
  EXPECT_EQ(Steps(*changes), (std::vector<Step>{{0, "denied", "awaiting_approval", "aborted"},
                                                {2, "wave_canceled", "pending", "canceled"}}));
  changes = ApplyRolloutEvent(Snapshot(R::kPaused, {W::kFailed, W::kPending}), E::kSuperseded);
  ASSERT_TRUE(changes);
  EXPECT_EQ(Steps(*changes), (std::vector<Step>{{0, "superseded", "paused", "superseded"},
                                                {2, "wave_canceled", "pending", "canceled"}}));
}

TEST(ApplyRolloutEvent, OtherEventsTouchOnlyTheRollout) {
  auto changes =
      ApplyRolloutEvent(Snapshot(R::kRunning, {W::kRunning, W::kPending}), E::kOperatorPause);
  ASSERT_TRUE(changes);
  EXPECT_EQ(Steps(*changes), (std::vector<Step>{{0, "operator_pause", "running", "paused"}}));
  EXPECT_FALSE(ApplyRolloutEvent(Snapshot(R::kPaused, {W::kPending}), E::kOperatorPause));
  EXPECT_FALSE(ApplyRolloutEvent(Snapshot(R::kRunning, {W::kPending}), E::kOperatorResume));
  EXPECT_FALSE(ApplyRolloutEvent(Snapshot(R::kAborted, {W::kCanceled}), E::kOperatorAbort));
  EXPECT_FALSE(ApplyRolloutEvent(Snapshot(R::kRunning, {W::kPending}), E::kApproved));
}

// ---- DecideWave --------------------------------------------------------------------------------

constexpr int64_t kNow = 1700000000;

GateDecision Gate(GateVerdict verdict, GateAction action = GateAction::kPause) {
  GateDecision d;
  d.verdict = verdict;
  d.action = action;
  d.reason = std::string(ToString(verdict));
  if (verdict == GateVerdict::kFailed) d.cause = FailureCause::kAbortCriterion;
  return d;
}

const std::vector<W> kFresh = {W::kPending, W::kPending, W::kPending, W::kPending};

TEST(DecideWave, StartsTheFirstWave) {
  PassDecision d = DecideWave(Plan{}, Snapshot(R::kRunning, kFresh), std::nullopt, kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "wave_started", "pending", "running"},
                                                 {0, "wave_started", "running", "running"}}));
  EXPECT_EQ(d.recheck_at, kNow);
  EXPECT_FALSE(d.verdict);
  EXPECT_EQ(d.changes[0].reason, "wave 1 started");
}

TEST(DecideWave, AsksForApprovalOnceThenStarts) {
  Plan plan;
  plan.approval = Approval{{1, 3}, 3600};
  RolloutSnapshot s = Snapshot(R::kRunning, kFresh);
  PassDecision d = DecideWave(plan, s, std::nullopt, kNow);
  EXPECT_EQ(Steps(d.changes),
            (std::vector<Step>{{0, "approval_required", "running", "awaiting_approval"}}));
  EXPECT_EQ(d.changes[0].reason, "wave 1 needs approval");
  // While awaiting, nothing happens.
  EXPECT_TRUE(
      DecideWave(plan, Snapshot(R::kAwaitingApproval, kFresh), std::nullopt, kNow).changes.empty());
  // Approved (the controller applied `approved`): the wave starts.
  s.approved_wave = 1;
  d = DecideWave(plan, s, std::nullopt, kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "wave_started", "pending", "running"},
                                                 {0, "wave_started", "running", "running"}}));
  // Wave 2 needs none; wave 3 asks again even though wave 1 was approved.
  s.waves = {W::kPassed, W::kPending, W::kPending, W::kPending};
  EXPECT_EQ(Steps(DecideWave(plan, s, std::nullopt, kNow).changes)[0],
            Step(2, "wave_started", "pending", "running"));
  s.waves = {W::kPassed, W::kPassed, W::kPending, W::kPending};
  EXPECT_EQ(Steps(DecideWave(plan, s, std::nullopt, kNow).changes),
            (std::vector<Step>{{0, "approval_required", "running", "awaiting_approval"}}));
  s.approved_wave = 3;
  EXPECT_EQ(Steps(DecideWave(plan, s, std::nullopt, kNow).changes)[0],
            Step(3, "wave_started", "pending", "running"));
}

TEST(DecideWave, WatchingChangesNothing) {
  RolloutSnapshot s = Snapshot(R::kRunning, {W::kRunning, W::kPending});
  PassDecision d = DecideWave(Plan{}, s, Gate(GateVerdict::kWatch), kNow);
  EXPECT_TRUE(d.changes.empty());
  EXPECT_FALSE(d.recheck_at);
  // No gate given for an active wave: nothing either.
  EXPECT_TRUE(DecideWave(Plan{}, s, std::nullopt, kNow).changes.empty());
}

TEST(DecideWave, ThresholdMetStartsTheSoak) {
  GateDecision gate = Gate(GateVerdict::kSoaking);
  gate.threshold_met_at = kNow;
  gate.recheck_at = kNow + 600;
  PassDecision d =
      DecideWave(Plan{}, Snapshot(R::kRunning, {W::kRunning, W::kPending}), gate, kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "threshold_met", "running", "soaking"}}));
  EXPECT_EQ(d.threshold_met_at, kNow);
  EXPECT_EQ(d.recheck_at, kNow + 600);
  // Already soaking: no change.
  gate.threshold_met_at.reset();
  EXPECT_TRUE(DecideWave(Plan{}, Snapshot(R::kRunning, {W::kSoaking, W::kPending}), gate, kNow)
                  .changes.empty());
}

TEST(DecideWave, PassedWaveStartsTheNext) {
  GateDecision gate = Gate(GateVerdict::kPassed);
  gate.threshold_met_at = kNow;
  PassDecision d =
      DecideWave(Plan{}, Snapshot(R::kRunning, {W::kRunning, W::kPending}), gate, kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "threshold_met", "running", "soaking"},
                                                 {1, "gate_passed", "soaking", "passed"},
                                                 {2, "wave_started", "pending", "running"},
                                                 {0, "wave_started", "running", "running"}}));
  EXPECT_EQ(d.verdict, GateVerdict::kPassed);
  EXPECT_EQ(d.verdict_wave, 1);
  EXPECT_EQ(d.recheck_at, kNow);
  EXPECT_EQ(d.changes[1].reason, "passed");
}

TEST(DecideWave, PassedWaveThenApproval) {
  Plan plan;
  plan.approval = Approval{{2}, 60};
  PassDecision d = DecideWave(plan, Snapshot(R::kRunning, {W::kSoaking, W::kPending}),
                              Gate(GateVerdict::kPassedWithFailures), kNow);
  EXPECT_EQ(Steps(d.changes),
            (std::vector<Step>{{1, "gate_passed", "soaking", "passed"},
                               {0, "approval_required", "running", "awaiting_approval"}}));
  EXPECT_EQ(d.verdict, GateVerdict::kPassedWithFailures);
}

TEST(DecideWave, LastWavePassedCompletes) {
  PassDecision d = DecideWave(Plan{}, Snapshot(R::kRunning, {W::kPassed, W::kSoaking}),
                              Gate(GateVerdict::kPassed), kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{2, "gate_passed", "soaking", "passed"},
                                                 {0, "all_waves_passed", "running", "completed"}}));
}

TEST(DecideWave, FailedWavePausesTheRollout) {
  PassDecision d = DecideWave(Plan{}, Snapshot(R::kRunning, {W::kPassed, W::kRunning, W::kPending}),
                              Gate(GateVerdict::kFailed, GateAction::kPause), kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{2, "gate_failed_pause", "running", "failed"},
                                                 {0, "gate_failed_pause", "running", "paused"}}));
  EXPECT_EQ(d.verdict, GateVerdict::kFailed);
  EXPECT_EQ(d.verdict_wave, 2);
  EXPECT_FALSE(d.recheck_at);
  EXPECT_EQ(d.changes[1].reason, "wave 2 failed: failed");
}

TEST(DecideWave, FailedWaveAbortsTheRolloutAndCancelsTheRest) {
  PassDecision d =
      DecideWave(Plan{}, Snapshot(R::kRunning, {W::kSoaking, W::kPending, W::kPending}),
                 Gate(GateVerdict::kFailed, GateAction::kAbort), kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "gate_failed_abort", "soaking", "failed"},
                                                 {0, "gate_failed_abort", "running", "aborted"},
                                                 {2, "wave_canceled", "pending", "canceled"},
                                                 {3, "wave_canceled", "pending", "canceled"}}));
}

TEST(DecideWave, PausedRolloutKeepsWatchingButStartsNothing) {
  RolloutSnapshot s = Snapshot(R::kPaused, {W::kSoaking, W::kPending});
  PassDecision d = DecideWave(Plan{}, s, Gate(GateVerdict::kPassed), kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "gate_passed", "soaking", "passed"}}));
  d = DecideWave(Plan{}, s, Gate(GateVerdict::kFailed, GateAction::kPause), kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "gate_failed_pause", "soaking", "failed"},
                                                 {0, "gate_failed_pause", "paused", "paused"}}));
  d = DecideWave(Plan{}, s, Gate(GateVerdict::kFailed, GateAction::kAbort), kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "gate_failed_abort", "soaking", "failed"},
                                                 {0, "gate_failed_abort", "paused", "aborted"},
                                                 {2, "wave_canceled", "pending", "canceled"}}));
  EXPECT_TRUE(
      DecideWave(Plan{}, Snapshot(R::kPaused, {W::kPassed, W::kPending}), std::nullopt, kNow)
          .changes.empty());
}

TEST(DecideWave, ResumeAfterAFailedWaveGoesOn) {
  PassDecision d = DecideWave(Plan{}, Snapshot(R::kRunning, {W::kPassed, W::kFailed, W::kPending}),
                              std::nullopt, kNow);
  EXPECT_EQ(Steps(d.changes)[0], Step(3, "wave_started", "pending", "running"));
  d = DecideWave(Plan{}, Snapshot(R::kRunning, {W::kPassed, W::kFailed}), std::nullopt, kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{0, "all_waves_passed", "running", "completed"}}));
}

TEST(DecideWave, NewerReleaseSupersedesBetweenWaves) {
  RolloutSnapshot s = Snapshot(R::kRunning, {W::kRunning, W::kPending, W::kPending});
  s.newer_release = true;
  // The current wave finishes first.
  EXPECT_TRUE(DecideWave(Plan{}, s, Gate(GateVerdict::kWatch), kNow).changes.empty());
  PassDecision d = DecideWave(Plan{}, s, Gate(GateVerdict::kPassed), kNow);
  EXPECT_EQ(Steps(d.changes), (std::vector<Step>{{1, "threshold_met", "running", "soaking"},
                                                 {1, "gate_passed", "soaking", "passed"},
                                                 {0, "superseded", "running", "superseded"},
                                                 {2, "wave_canceled", "pending", "canceled"},
                                                 {3, "wave_canceled", "pending", "canceled"}}));
  // A finished rollout is completed, not superseded.
  s.waves = {W::kPassed, W::kPassed, W::kSoaking};
  EXPECT_EQ(Steps(DecideWave(Plan{}, s, Gate(GateVerdict::kPassed), kNow).changes).back(),
            Step(0, "all_waves_passed", "running", "completed"));
  // Waiting rollouts are superseded at once.
  for (R state : {R::kAwaitingApproval, R::kPaused}) {
    RolloutSnapshot w = Snapshot(state, {W::kPassed, W::kPending});
    w.newer_release = true;
    EXPECT_EQ(Steps(DecideWave(Plan{}, w, std::nullopt, kNow).changes),
              (std::vector<Step>{{0, "superseded", std::string(ToString(state)), "superseded"},
                                 {2, "wave_canceled", "pending", "canceled"}}));
    w.newer_release = false;
    EXPECT_TRUE(DecideWave(Plan{}, w, std::nullopt, kNow).changes.empty());
  }
}

TEST(DecideWave, TerminalRolloutsAreLeftAlone) {
  for (R state : {R::kCompleted, R::kAborted, R::kSuperseded}) {
    RolloutSnapshot s = Snapshot(state, {W::kRunning, W::kPending});
    s.newer_release = true;
    EXPECT_TRUE(DecideWave(Plan{}, s, Gate(GateVerdict::kPassed), kNow).changes.empty());
  }
}

// A whole rollout driven pass by pass, every change applied through the tables.
TEST(DecideWave, WholeRollout) {
  Plan plan;
  plan.approval = Approval{{3}, 60};
  RolloutSnapshot s = Snapshot(R::kRunning, kFresh);
  std::vector<std::string> history;
  for (int pass = 0; pass < 50 && !IsTerminal(s.state); ++pass) {
    bool active = std::any_of(s.waves.begin(), s.waves.end(),
                              [](W w) { return w == W::kRunning || w == W::kSoaking; });
    std::optional<GateDecision> gate;
    if (active) gate = Gate(GateVerdict::kPassed);
    PassDecision d = DecideWave(plan, s, gate, kNow);
    for (const Change& c : d.changes) {
      history.push_back((c.wave ? "w" + std::to_string(c.wave) : std::string("r")) + ":" +
                        std::string(ToString(c.event)));
      if (c.wave == 0) {
        ASSERT_EQ(Next(s.state, c.event), ParseRolloutState(c.to));
        s.state = *ParseRolloutState(c.to);
      } else {
        ASSERT_EQ(Next(s.waves[c.wave - 1], c.event), ParseWaveState(c.to));
        s.waves[c.wave - 1] = *ParseWaveState(c.to);
      }
    }
    if (s.state == R::kAwaitingApproval) {  // an operator approves
      s.state = *Next(s.state, E::kApproved);
      s.approved_wave = 3;
      history.push_back("r:approved");
    }
  }
  EXPECT_EQ(s.state, R::kCompleted);
  EXPECT_EQ(history, (std::vector<std::string>{
                         "w1:wave_started", "r:wave_started", "w1:threshold_met", "w1:gate_passed",
                         "w2:wave_started", "r:wave_started", "w2:threshold_met", "w2:gate_passed",
                         "r:approval_required", "r:approved", "w3:wave_started", "r:wave_started",
                         "w3:threshold_met", "w3:gate_passed", "w4:wave_started", "r:wave_started",
                         "w4:threshold_met", "w4:gate_passed", "r:all_waves_passed"}));
}

// ---- DecideCycle -------------------------------------------------------------------------------

TEST(DecideCycle, CompletesWhenEveryRolloutIsTerminal) {
  EXPECT_EQ(DecideCycle(C::kRunning, {}), E::kAllRolloutsTerminal);
  EXPECT_EQ(DecideCycle(C::kRunning, {R::kCompleted, R::kAborted, R::kSuperseded}),
            E::kAllRolloutsTerminal);
  for (R open : {R::kRunning, R::kAwaitingApproval, R::kPaused})
    EXPECT_FALSE(DecideCycle(C::kRunning, {R::kCompleted, open})) << ToString(open);
  EXPECT_FALSE(DecideCycle(C::kCompleted, {}));
}

// ---- RolloutId ---------------------------------------------------------------------------------

// What AWS IoT accepts as a job id, and what the rollouts table stores.
bool IsJobId(const std::string& id) {
  static const std::regex kJobId("^[A-Za-z0-9_.:-]{1,64}$");
  return std::regex_match(id, kJobId);
}

// Whether `id` is a cut id: at most 64 characters ending "-<8 hex digits of MD5>-c<cycle>".
bool IsCutId(const std::string& id, int64_t cycle) {
  static const std::regex kCut("^fw-.*-[0-9a-f]{8}$");
  const std::string suffix = "-c" + std::to_string(cycle);
  return id.size() <= 64 && id.ends_with(suffix) &&
         std::regex_match(id.substr(0, id.size() - suffix.size()), kCut);
}

TEST(RolloutId, PlainModelAndVersion) {
  EXPECT_EQ(RolloutId("m1", "2.0.0", 3), "fw-m1-2.0.0-c3");
  // A model with a '-' could split two ways: its id carries the hash.
  EXPECT_TRUE(IsCutId(RolloutId("arm-v2", "1.5.0-rc.1", 12), 12));
  EXPECT_TRUE(RolloutId("arm-v2", "1.5.0-rc.1", 12).starts_with("fw-arm-v2-1.5.0-rc.1-"));
  EXPECT_EQ(RolloutId("arm_v2.x", "10.0.0", 1), "fw-arm_v2.x-10.0.0-c1");
  EXPECT_EQ(RolloutId("m1", "2.0.0", 3), RolloutId("m1", "2.0.0", 3));  // deterministic
  EXPECT_NE(RolloutId("m1", "2.0.0", 3), RolloutId("m1", "2.0.0", 4));
}

TEST(RolloutId, DisallowedCharactersBecomeUnderscores) {
  EXPECT_EQ(RolloutId("arm", "1.0.0+build.7", 1), "fw-arm-1.0.0_build.7-c1");
  EXPECT_EQ(RolloutId("arm", "1.0.0-rc.1+sha.5114f85", 2), "fw-arm-1.0.0-rc.1_sha.5114f85-c2");
  // Not valid models, but the id stays a valid job id whatever it is given.
  EXPECT_EQ(RolloutId("a b/c#$", "1.0.0", 4), "fw-a_b_c__-1.0.0-c4");
  EXPECT_EQ(RolloutId("m\xc3\xa9", "1.0.0", 5), "fw-m__-1.0.0-c5");  // UTF-8 é: two bytes
  EXPECT_EQ(RolloutId("m:1", "1.0.0", 6), "fw-m:1-1.0.0-c6");        // ':' is allowed
  for (const auto& [model, version] :
       std::vector<std::pair<std::string, std::string>>{{"arm", "1.0.0+b"},
                                                        {"x/y", "1.0.0"},
                                                        {"sp ace", "2.0.0+a.b"},
                                                        {"t\ta\nb", "1.0.0"},
                                                        {std::string("nul\0x", 5), "1.0.0"},
                                                        {"q?*%&", "0.0.1"}}) {
    EXPECT_TRUE(IsJobId(RolloutId(model, version, 7))) << RolloutId(model, version, 7);
  }
}

TEST(RolloutId, AtMost64CharactersIsKeptWhole) {
  // "fw-" + model + "-1.0.0" + "-c1" is exactly 64 characters with a 52-character model.
  const std::string model(52, 'm');
  const std::string id = RolloutId(model, "1.0.0", 1);
  EXPECT_EQ(id, "fw-" + model + "-1.0.0-c1");
  EXPECT_EQ(id.size(), 64u);
  EXPECT_TRUE(IsJobId(id));
}

TEST(RolloutId, LongerIsCutAndEndsWithAHashAndTheCycle) {
  // One character more than fits: cut to exactly 64.
  const std::string id53 = RolloutId(std::string(53, 'm'), "1.0.0", 1);
  EXPECT_EQ(id53.size(), 64u);
  EXPECT_TRUE(IsCutId(id53, 1)) << id53;
  // 52 characters of the name ("fw-" and 49 of the model), '-', 8 hex digits, "-c1".
  EXPECT_TRUE(id53.starts_with("fw-" + std::string(49, 'm') + "-")) << id53;

  // A 64-character model (the longest valid) and a long prerelease.
  const std::string model(64, 'a');
  const std::string version = "2.0.0-rc.1.2.3.4.5.6.7.8.9.10.11.12.13.14.15+build.2024.06.01";
  for (int64_t cycle : {int64_t{1}, int64_t{123456}, std::numeric_limits<int64_t>::max()}) {
    const std::string id = RolloutId(model, version, cycle);
    EXPECT_TRUE(IsJobId(id)) << id;
    EXPECT_TRUE(IsCutId(id, cycle)) << id;
    EXPECT_TRUE(id.starts_with("fw-aaaa")) << id;  // the start is kept
    EXPECT_EQ(id, RolloutId(model, version, cycle));
  }
  // A long version alone is cut too, and a disallowed character before the cut still maps.
  const std::string id = RolloutId("arm", "1.0.0+" + std::string(80, 'b'), 9);
  EXPECT_TRUE(IsCutId(id, 9)) << id;
  EXPECT_TRUE(id.starts_with("fw-arm-1.0.0_bbb")) << id;
}

TEST(RolloutId, ReleasesDifferingOnlyAfterTheCutGetDistinctIds) {
  const std::string model(64, 'm');
  const std::string a = RolloutId(model, "1.0.0-alpha.1", 3);
  const std::string b = RolloutId(model, "1.0.0-alpha.2", 3);
  EXPECT_TRUE(IsCutId(a, 3)) << a;
  EXPECT_TRUE(IsCutId(b, 3)) << b;
  EXPECT_EQ(a.substr(0, 40), b.substr(0, 40));  // the same kept start
  EXPECT_NE(a, b);
  // Differing only in a character that maps to '_' (build metadata '+' vs prerelease '-').
  EXPECT_NE(RolloutId(model, "1.0.0+x", 3), RolloutId(model, "1.0.0-x", 3));
  EXPECT_NE(RolloutId(std::string(60, 'm') + "1", "1.0.0", 3),
            RolloutId(std::string(60, 'm') + "2", "1.0.0", 3));
}

TEST(RolloutId, EveryLengthGivesAValidDistinctId) {
  std::set<std::string> ids;
  int made = 0;
  for (size_t length = 1; length <= 64; ++length) {
    for (const char* version :
         {"1.0.0", "1.0.0-rc.1", "1.0.0+build.1", "12.34.56-beta.7+exp.sha"}) {
      const std::string model(length, 'k');
      const std::string id = RolloutId(model, version, 42);
      EXPECT_TRUE(IsJobId(id)) << id;
      EXPECT_TRUE(id.ends_with("-c42")) << id;
      ids.insert(id);
      ++made;
    }
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(made));
}

// Known bug (reported, not fixed here): the '-' between model and version is also a valid model
// and prerelease character, so two releases active in the same cycle can get the same id, and
// the second rollouts row of the cycle then violates the primary key. Enable once fixed.
TEST(RolloutId, ModelAndVersionSplitIsUnambiguous) {
  EXPECT_NE(RolloutId("m-1.0.0", "2.0.0", 1), RolloutId("m", "1.0.0-2.0.0", 1));
}

}  // namespace
}  // namespace fleet
