// The never-ending machine's state machines (DESIGN §4) as explicit transition tables.
//
// Three machines share one set of named events: the cycle (running -> completed), each rollout of
// a cycle, and each wave of a rollout. A transition is a row (from, event, to) of a table; a pair
// that is not in the table is refused (Next returns nullopt) and the controller changes nothing.
// State names are the lowercase strings of the database's check constraints; event names are the
// snake_case `kind` of the events rows that record each change.
//
// DecideWave combines a wave gate's decision (gates.h) with these tables into the ordered list of
// changes of one reconcile pass over one rollout; the controller applies them in one transaction.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/gates.h"
#include "fleet/plan.h"

namespace fleet {

enum class CycleState { kRunning, kCompleted };
enum class RolloutState { kRunning, kAwaitingApproval, kPaused, kCompleted, kAborted, kSuperseded };
enum class WaveState { kPending, kRunning, kSoaking, kPassed, kFailed, kCanceled };

enum class Event {
  kWaveStarted,          // wave: pending -> running; rollout: running (current_wave = the wave)
  kThresholdMet,         // wave: running -> soaking
  kGatePassed,           // wave: soaking -> passed
  kGateFailedPause,      // wave: running|soaking -> failed; rollout: running|paused -> paused
  kGateFailedAbort,      // wave: running|soaking -> failed; rollout: running|paused -> aborted
  kWaveCanceled,         // wave: pending|running|soaking -> canceled (its rollout ended)
  kApprovalRequired,     // rollout: running -> awaiting_approval (before a wave of beforeWaves)
  kApproved,             // rollout: awaiting_approval -> running
  kDenied,               // rollout: awaiting_approval -> aborted
  kApprovalExpired,      // rollout: awaiting_approval -> paused (resume asks again)
  kOperatorPause,        // rollout: running|awaiting_approval -> paused
  kOperatorResume,       // rollout: paused -> running
  kOperatorAbort,        // rollout: running|awaiting_approval|paused -> aborted
  kSuperseded,           // rollout: running|awaiting_approval|paused -> superseded
  kAllWavesPassed,       // rollout: running -> completed (no wave left to run)
  kAllRolloutsTerminal,  // cycle: running -> completed
};

inline constexpr CycleState kCycleStates[] = {CycleState::kRunning, CycleState::kCompleted};
inline constexpr RolloutState kRolloutStates[] = {
    RolloutState::kRunning,   RolloutState::kAwaitingApproval, RolloutState::kPaused,
    RolloutState::kCompleted, RolloutState::kAborted,          RolloutState::kSuperseded};
inline constexpr WaveState kWaveStates[] = {WaveState::kPending, WaveState::kRunning,
                                            WaveState::kSoaking, WaveState::kPassed,
                                            WaveState::kFailed,  WaveState::kCanceled};
inline constexpr Event kEvents[] = {
    Event::kWaveStarted,        Event::kThresholdMet,    Event::kGatePassed,
    Event::kGateFailedPause,    Event::kGateFailedAbort, Event::kWaveCanceled,
    Event::kApprovalRequired,   Event::kApproved,        Event::kDenied,
    Event::kApprovalExpired,    Event::kOperatorPause,   Event::kOperatorResume,
    Event::kOperatorAbort,      Event::kSuperseded,      Event::kAllWavesPassed,
    Event::kAllRolloutsTerminal};

// "running", "completed" / "running", "awaiting_approval", "paused", "completed", "aborted",
// "superseded" / "pending", "running", "soaking", "passed", "failed", "canceled".
std::string_view ToString(CycleState state);
std::string_view ToString(RolloutState state);
std::string_view ToString(WaveState state);
std::optional<CycleState> ParseCycleState(std::string_view text);
std::optional<RolloutState> ParseRolloutState(std::string_view text);
std::optional<WaveState> ParseWaveState(std::string_view text);
// "wave_started", "threshold_met", ..., "all_rollouts_terminal".
std::string_view ToString(Event event);
std::optional<Event> ParseEvent(std::string_view text);

template <typename State>
struct Transition {
  State from;
  Event event;
  State to;
};

// The tables themselves, in documentation order.
std::span<const Transition<CycleState>> CycleTransitions();
std::span<const Transition<RolloutState>> RolloutTransitions();
std::span<const Transition<WaveState>> WaveTransitions();

// The state `event` leads to from `from`, or nullopt when the table has no such row.
std::optional<CycleState> Next(CycleState from, Event event);
std::optional<RolloutState> Next(RolloutState from, Event event);
std::optional<WaveState> Next(WaveState from, Event event);

// Terminal states have no outgoing row: cycle completed; rollout completed, aborted, superseded;
// wave passed, failed, canceled.
bool IsTerminal(CycleState state);
bool IsTerminal(RolloutState state);
bool IsTerminal(WaveState state);

// What the controller does on entering a rollout state, beside recording it:
// aborted    -> cancel the rollout's QUEUED executions (devices get notify-next) and halt the
//               release, so later cycles skip it until `fleetwave release resume`;
// superseded -> cancel the QUEUED executions (the newer release will reach them);
// completed  -> cancel the QUEUED executions: devices that never started (offline past the
//               passed waves) are offered the release again by the next cycle, not twice.
// IN_PROGRESS executions keep running; their rollout's timeouts still apply.
struct EntryActions {
  bool cancel_queued = false;
  bool halt_release = false;
};
EntryActions OnEnter(RolloutState state);

// The tables for the docs, generated so they cannot drift from the code.
enum class Machine { kCycle, kRollout, kWave };
std::string_view ToString(Machine machine);  // "cycle", "rollout", "wave"
// Mermaid text starting "stateDiagram-v2" (no code fences), with [*] at the initial state
// (cycle running, rollout running, wave pending) and after each terminal one.
std::string RenderMermaid(Machine machine);
std::string RenderMarkdown(Machine machine);  // a | from | event | to | table

// The rollout (job) id of a release in a cycle: "fw-<model>-<version>-c<cycle>". Characters a
// job id may not hold (anything but A-Z a-z 0-9 _ . : -, e.g. the '+' of build metadata) become
// '_'. When the model holds a '-' (so the name could split two ways) or the id would pass 64
// characters, the name is cut to fit and followed by 8 hex digits of MD5(model + "/" + version),
// so distinct releases keep distinct ids.
std::string RolloutId(std::string_view model, std::string_view version, int64_t cycle);

// ---- One reconcile pass over one rollout ------------------------------------------------------

struct RolloutSnapshot {
  RolloutState state = RolloutState::kRunning;
  std::vector<WaveState> waves;  // waves[k - 1] is wave k; one entry per plan wave
  bool newer_release = false;    // a newer active release of the same model exists
  int approved_wave = 0;         // the wave whose approval was granted (0: none)
};

struct Change {
  int wave = 0;  // 0: the rollout itself; k >= 1: wave k
  Event event = Event::kWaveStarted;
  std::string_view from;  // state names as in the database
  std::string_view to;
  std::string reason;  // why, for the events row's detail (may be empty)
};

// The changes of a rollout event in order: the rollout's own transition, then, when it enters
// aborted or superseded, WaveCanceled for each wave not yet terminal. Nullopt when the rollout
// table refuses the event (e.g. pause of a paused rollout: the controller answers "already
// paused"). For operator commands, approvals and supersession outside DecideWave.
std::optional<std::vector<Change>> ApplyRolloutEvent(const RolloutSnapshot& snapshot, Event event);

struct PassDecision {
  std::vector<Change> changes;  // apply in order, each with its events row
  // Record on the active wave (GateDecision::threshold_met_at).
  std::optional<int64_t> threshold_met_at;
  // The verdict of the wave that finished in this pass (waves.verdict), and which wave it was.
  std::optional<GateVerdict> verdict;
  int verdict_wave = 0;
  std::optional<int64_t> recheck_at;  // the gate's; `now` after starting a wave
};

// REQUIRES: `gate` is EvaluateWave's decision for the rollout's running or soaking wave when it
// has one (ignored otherwise); snapshot.waves.size() == plan.waves.size(). One pass:
//   - terminal rollout: nothing;
//   - the active wave's gate: kWatch, kSoaking -> at most ThresholdMet; passed -> [ThresholdMet,]
//     GatePassed; failed -> GateFailedPause|Abort for the wave and the rollout (abort also
//     cancels the pending waves);
//   - then, with no active wave and the rollout running: no wave pending -> AllWavesPassed;
//     a newer release -> Superseded (+ WaveCanceled for the pending waves); the next wave
//     needs approval not yet granted -> ApprovalRequired; else WaveStarted for it;
//   - awaiting_approval or paused with no active wave and a newer release -> Superseded.
// A paused rollout's active wave is still judged, but no new wave starts. After an operator
// resumes a rollout that a gate paused, the failed wave stays failed and the next pass starts the
// next wave (resume means "accept it and go on"); AllWavesPassed then completes the rollout even
// though a wave failed. ApprovalExpired is the controller's to apply (it knows the token expiry).
PassDecision DecideWave(const Plan& plan, const RolloutSnapshot& snapshot,
                        const std::optional<GateDecision>& gate, int64_t now);

// The cycle's event for this pass: AllRolloutsTerminal when it runs and every rollout is
// terminal (also when it has none), else nullopt.
std::optional<Event> DecideCycle(CycleState state, const std::vector<RolloutState>& rollouts);

}  // namespace fleet
