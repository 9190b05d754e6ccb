// Waiting on a condition in a test: poll it until it holds or a deadline passes. Tests never
// sleep for a fixed time; a passing test waits only as long as the condition takes.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace testing_support {

// Generous: it bounds a failing test, a passing one never waits for it.
inline constexpr std::chrono::milliseconds kDeadline{15000};

// True as soon as `cond` holds; false when `timeout` passes first.
inline bool Eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds timeout = kDeadline) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace testing_support
