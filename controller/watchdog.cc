#include "controller/watchdog.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <system_error>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <pqxx/pqxx>

#include "controller/logging.h"
#include "db/connection.h"

namespace controller {

const char* ToString(CycleVerdict verdict) {
  switch (verdict) {
    case CycleVerdict::kUnknown:
      return "unknown";
    case CycleVerdict::kNone:
      return "none";
    case CycleVerdict::kFresh:
      return "fresh";
    case CycleVerdict::kStale:
      return "stale";
    case CycleVerdict::kNotJudged:
      return "not_judged";
    case CycleVerdict::kSeveral:
      return "several";
  }
  return "unknown";
}

WatchdogDecision DecideWatchdog(const db::CycleHealth& health, double stale_after_seconds,
                                const ChildState& child,
                                std::optional<int64_t> stale_recorded_for) {
  WatchdogDecision d;
  d.stale_recorded_for = stale_recorded_for;
  if (health.running == 0) {
    d.verdict = CycleVerdict::kNone;
    d.start_cycle = true;
    d.stale_recorded_for.reset();
    return d;
  }
  if (health.running != 1) {
    // Only a broken schema allows this; starting, restarting or recording would guess.
    d.verdict = CycleVerdict::kSeveral;
    return d;
  }
  if (health.heartbeat_age_seconds <= stale_after_seconds) {
    d.verdict = CycleVerdict::kFresh;
    d.stale_recorded_for.reset();
    return d;
  }
  if (child.supervising && child.running && child.in_grace) {
    // A controller that has just started must first win the lease and run a pass before it
    // can beat; judging it now would restart it in a loop.
    d.verdict = CycleVerdict::kNotJudged;
    return d;
  }
  d.verdict = CycleVerdict::kStale;
  d.record_stale = stale_recorded_for != health.cycle_id;
  d.stale_recorded_for = health.cycle_id;
  // A command waiting for its restart is restarted by the backoff schedule, not here.
  d.restart_child = child.supervising && child.running;
  return d;
}

std::string WatchdogReport::Describe() const {
  const std::string cycle = fmt::format("cycle {} running, heartbeat {:.1f} s old",
                                        health.cycle_id.value_or(0), health.heartbeat_age_seconds);
  switch (verdict) {
    case CycleVerdict::kUnknown:
      return "database unreachable: " + error.value_or("unknown error");
    case CycleVerdict::kNone:
      return started_cycle ? fmt::format("no running cycle: started cycle {}", *started_cycle)
                           : std::string("no running cycle: another process started one first");
    case CycleVerdict::kFresh:
      return fmt::format("{}: fresh (stale after {:g} s)", cycle, stale_after_seconds);
    case CycleVerdict::kStale:
      return fmt::format("{}: stale (older than {:g} s); {}{}", cycle, stale_after_seconds,
                         stale_recorded ? "recorded heartbeat_stale" : "already recorded",
                         restarted ? "; restarted the supervised controller" : "");
    case CycleVerdict::kNotJudged:
      return fmt::format("{}: not judged, the supervised controller started less than {:g} s ago",
                         cycle, stale_after_seconds);
    case CycleVerdict::kSeveral:
      return fmt::format("{} running cycles (the unique index forbids this): doing nothing",
                         health.running);
  }
  return "unknown";
}

namespace {

std::string Join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    return fmt::format("was killed by signal {} (SIG{})", sig, name ? name : "?");
  }
  return fmt::format("ended with wait status {}", status);
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int PollMillis(std::chrono::steady_clock::duration d) {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(d).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, 24 * 3600 * 1000));
}

}  // namespace

Watchdog::Watchdog(WatchdogOptions options)
    : options_(std::move(options)), backoff_(options_.backoff_initial) {
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0)
    throw std::system_error(errno, std::generic_category(), "watchdog: pipe");
}

Watchdog::~Watchdog() {
  try {
    StopChild();
  } catch (const std::exception& e) {
    spdlog::error("watchdog: stopping the supervised command: {}", e.what());
  }
  close(wake_[0]);
  close(wake_[1]);
}

void Watchdog::Stop() {
  const char byte = 1;
  // A full pipe already holds a wake-up, so a failed write loses nothing.
  [[maybe_unused]] ssize_t n = write(wake_[1], &byte, 1);
}

ChildState Watchdog::Child() const {
  ChildState c;
  c.supervising = !options_.supervise.empty();
  c.running = child_pid_.load() != 0;
  c.in_grace = c.running && Clock::now() - child_started_at_ < options_.stale_after;
  return c;
}

WatchdogReport Watchdog::CheckOnce() {
  WatchdogReport report;
  report.stale_after_seconds = std::chrono::duration<double>(options_.stale_after).count();
  WatchdogDecision decision;
  try {
    if (!conn_) conn_ = db::Connect(options_.db);
    pqxx::work txn(*conn_);
    report.health = db::ReadCycleHealth(txn);
    decision =
        DecideWatchdog(report.health, report.stale_after_seconds, Child(), stale_recorded_for_);
    if (decision.start_cycle) report.started_cycle = db::StartCycle(txn, "watchdog");
    if (decision.record_stale) {
      db::RecordEvent(
          txn,
          {.cycle_id = report.health.cycle_id,
           .kind = "heartbeat_stale",
           .detail = {{"by", "watchdog"},
                      {"ageSeconds", std::round(report.health.heartbeat_age_seconds * 10) / 10},
                      {"staleAfterSeconds", report.stale_after_seconds},
                      {"restarting", decision.restart_child}}});
    }
    txn.commit();
  } catch (const pqxx::in_doubt_error& e) {
    // Whether the cycle or the event was written is unknown: the next check reads it back.
    conn_.reset();
    report.error = std::string("commit in doubt: ") + e.what();
    report.started_cycle.reset();
    return report;
  } catch (const std::exception& e) {
    // Unreachable, restarting, or not migrated yet: all transient for a watchdog.
    conn_.reset();
    report.error = e.what();
    report.started_cycle.reset();
    return report;
  }
  report.verdict = decision.verdict;
  report.stale_recorded = decision.record_stale;
  stale_recorded_for_ = decision.stale_recorded_for;
  if (decision.restart_child) {
    spdlog::warn("watchdog: cycle {} heartbeat is {:.1f} s old; restarting `{}`",
                 report.health.cycle_id.value_or(0), report.health.heartbeat_age_seconds,
                 Join(options_.supervise));
    StopChild();
    StartChildOrScheduleRetry();
    report.restarted = child_pid_.load() != 0;
  }
  return report;
}

void Watchdog::Run() {
  const bool supervising = !options_.supervise.empty();
  if (supervising) StartChild();
  auto next_check = Clock::now();
  std::optional<Clock::time_point> warned_at;  // the last "database unreachable" warning
  while (true) {
    auto now = Clock::now();
    if (supervising && child_pid_.load() == 0 && restart_at_ && now >= *restart_at_)
      StartChildOrScheduleRetry();
    if (now >= next_check) {
      WatchdogReport r = CheckOnce();
      if (r.error) {
        // Once when it starts, then once a minute, so an outage does not flood the log.
        if (!warned_at || Clock::now() - *warned_at >= std::chrono::minutes(1)) {
          spdlog::warn("watchdog: cannot check the cycles: {}; retrying every {:g} s", *r.error,
                       Seconds(options_.interval));
          warned_at = Clock::now();
        }
      } else {
        if (warned_at) spdlog::info("watchdog: the database answers again");
        warned_at.reset();
        switch (r.verdict) {
          case CycleVerdict::kNone:
          case CycleVerdict::kNotJudged:
            if (r.started_cycle) {  // a state change: the cycle it started, as a field
              LogWith(spdlog::level::info,
                      {{"cycle", *r.started_cycle}, {"to", "running"}, {"event", "cycle_started"}},
                      "watchdog: " + r.Describe());
            } else {
              spdlog::info("watchdog: {}", r.Describe());
            }
            break;
          case CycleVerdict::kStale:
            if (r.stale_recorded || r.restarted) spdlog::warn("watchdog: {}", r.Describe());
            break;
          case CycleVerdict::kSeveral:
            spdlog::error("watchdog: {}", r.Describe());
            break;
          default:
            spdlog::debug("watchdog: {}", r.Describe());
        }
      }
      // From the end of the check, so a slow database never makes checks pile up.
      next_check = Clock::now() + options_.interval;
      ++checks_;
    }

    auto wake_at = next_check;
    if (supervising && child_pid_.load() == 0 && restart_at_)
      wake_at = std::min(wake_at, *restart_at_);
    pollfd fds[2] = {{wake_[0], POLLIN, 0}, {pidfd_, POLLIN, 0}};
    const nfds_t nfds = pidfd_ >= 0 ? 2 : 1;
    int n = poll(fds, nfds, PollMillis(wake_at - Clock::now()));
    if (n < 0) {
      if (errno == EINTR) continue;  // a signal handler's Stop() shows on the next poll
      throw std::system_error(errno, std::generic_category(), "watchdog: poll");
    }
    if (fds[0].revents & POLLIN) {
      char buf[64];
      while (read(wake_[0], buf, sizeof buf) > 0) {
      }
      break;
    }
    if (nfds == 2 && fds[1].revents != 0) ReapExitedChild();
  }
  if (child_pid_.load() != 0) spdlog::info("watchdog: stopping `{}`", Join(options_.supervise));
  StopChild();
}

void Watchdog::StartChild() {
  // Everything the child needs is built before fork(): between fork and exec only
  // async-signal-safe calls are allowed (other threads may hold the allocator's locks).
  std::vector<char*> argv;
  for (const auto& a : options_.supervise) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // The child reports a failed exec through this pipe; a successful exec closes it.
  int status_pipe[2];
  if (pipe2(status_pipe, O_CLOEXEC) != 0)
    throw std::system_error(errno, std::generic_category(), "watchdog: pipe");
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int e = errno;
    close(status_pipe[0]);
    close(status_pipe[1]);
    throw std::system_error(e, std::generic_category(), "watchdog: fork");
  }
  if (pid == 0) {
    close(status_pipe[0]);
    // Its own process group: a terminal's Ctrl-C reaches the watchdog only (which then stops
    // the command in order), and stopping it reaches everything it started.
    setpgid(0, 0);
    // If the watchdog dies without stopping it, it goes too: a new watchdog would otherwise
    // start a second controller beside an orphan.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    // Neither our blocked signals nor ignored ones (nohup, test runners) may leak into it.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGCHLD}) signal(s, SIG_DFL);
    execvp(argv[0], argv.data());
    const int e = errno;
    [[maybe_unused]] ssize_t n = write(status_pipe[1], &e, sizeof e);
    _exit(127);
  }
  close(status_pipe[1]);
  setpgid(pid, pid);  // as the child does: the group exists whichever runs first
  int exec_errno = 0;
  ssize_t n;
  do {
    n = read(status_pipe[0], &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  close(status_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    throw CommandError("cannot run `" + Join(options_.supervise) + "`: " + strerror(exec_errno));
  }
  // Readable when the command exits, so Run() sleeps in poll() instead of polling waitpid().
  // Via syscall(): glibc 2.36's <sys/pidfd.h> lacks extern "C" and does not link from C++.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    const int e = errno;
    kill(-pid, SIGKILL);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    throw std::system_error(e, std::generic_category(), "watchdog: pidfd_open (Linux >= 5.3)");
  }
  pidfd_ = pidfd;
  child_started_at_ = Clock::now();
  restart_at_.reset();
  ++child_starts_;  // first: whoever sees the new pid sees it counted
  child_pid_.store(pid);
  spdlog::info("watchdog: started `{}` (pid {})", Join(options_.supervise), pid);
}

void Watchdog::StartChildOrScheduleRetry() {
  try {
    StartChild();
  } catch (const std::exception& e) {
    // The binary may be in the middle of an upgrade: keep trying, more and more slowly.
    restart_at_ = Clock::now() + backoff_;
    spdlog::error("watchdog: {}; trying again in {:g} s", e.what(), Seconds(backoff_));
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
  }
}

int Watchdog::Reap() {
  const pid_t pid = child_pid_.load();
  // Whatever the command left in its group goes too, so the next one never runs beside the
  // remains of the last. The leader is not reaped yet, so its group id cannot have been reused.
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  close(pidfd_);
  pidfd_ = -1;
  child_pid_.store(0);
  return status;
}

void Watchdog::StopChild() {
  const pid_t pid = child_pid_.load();
  if (pid == 0) return;
  kill(-pid, SIGTERM);
  const auto deadline = Clock::now() + options_.stop_grace;
  bool exited = false;
  while (true) {
    pollfd p = {pidfd_, POLLIN, 0};
    int n = poll(&p, 1, PollMillis(deadline - Clock::now()));
    if (n < 0 && errno == EINTR) continue;
    exited = n > 0;
    break;
  }
  if (!exited) {
    spdlog::warn("watchdog: `{}` (pid {}) still runs {:g} s after SIGTERM; sending SIGKILL",
                 Join(options_.supervise), pid, Seconds(options_.stop_grace));
  }
  const int status = Reap();
  spdlog::info("watchdog: `{}` (pid {}) stopped: {}", Join(options_.supervise), pid,
               DescribeStatus(status));
}

void Watchdog::ReapExitedChild() {
  const pid_t pid = child_pid_.load();
  const auto ran = Clock::now() - child_started_at_;
  const int status = Reap();
  // A command that ran a good while is not crash-looping: its next failure starts afresh.
  if (ran >= options_.backoff_reset_after) backoff_ = options_.backoff_initial;
  restart_at_ = Clock::now() + backoff_;
  spdlog::warn("watchdog: `{}` (pid {}) {} after {:.1f} s; restarting it in {:g} s (start {})",
               Join(options_.supervise), pid, DescribeStatus(status), Seconds(ran),
               Seconds(backoff_), child_starts_.load() + 1);
  backoff_ = std::min(backoff_ * 2, options_.backoff_max);
}

}  // namespace controller
