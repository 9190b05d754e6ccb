// A headless Chromium driven over the Chrome DevTools Protocol, for tests that check a page as a
// person would see it: what it shows, its colours, a click, a screenshot.
//
// Chromium is started with --remote-debugging-pipe: CDP messages are JSON, each ended by a NUL
// byte; Chromium reads commands on its fd 3 and writes answers and events on its fd 4. One page
// (tab) is opened at launch and every call acts on it.
//
// Every wait has a deadline: a hung or crashed browser makes the call throw std::runtime_error
// (with the tail of Chromium's log) instead of hanging the test. Not thread-safe: use it from one
// thread. Launch ignores SIGPIPE in the whole process (a write to a dead browser then fails
// instead of killing the test). The binary is $FLEETWAVE_CHROMIUM if set, else `chromium` (Debian's
// package, installed by scripts/bootstrap), `chromium-browser` or `google-chrome` on PATH.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace testing_support {

class HeadlessBrowser {
 public:
  // Starts Chromium (1280x900 viewport, a fresh profile in a temporary directory) and opens a
  // blank page. Returns nullptr and sets *why_not to a sentence fit for GTEST_SKIP() when no
  // binary is found or it does not start and answer within 30 s. Makes the calling process a
  // child subreaper (prctl), so that it reaps Chromium's helper processes itself.
  static std::unique_ptr<HeadlessBrowser> Launch(std::string* why_not);

  // Kills the browser's process group, reaps every process of it and removes the profile: no
  // chromium process, nor zombie, outlives this object.
  ~HeadlessBrowser();
  HeadlessBrowser(const HeadlessBrowser&) = delete;
  HeadlessBrowser& operator=(const HeadlessBrowser&) = delete;

  // Loads `url` and waits for its load event. Throws when the navigation fails (e.g.
  // "net::ERR_CONNECTION_REFUSED") or the page has not loaded within `deadline`.
  void Navigate(const std::string& url,
                std::chrono::milliseconds deadline = std::chrono::seconds(30));

  // Evaluates JavaScript in the page, as the DevTools console does, and returns the value of its
  // last expression as JSON (a promise is awaited; undefined, NaN and DOM nodes come back as null
  // or {}). Throws with Chrome's exception text (e.g. "ReferenceError: x is not defined") when
  // the script throws. Top-level `const`/`let` stay declared for later calls: wrap a script that
  // declares them in `{ ... }` or `(() => { ... })()`.
  nlohmann::json Evaluate(const std::string& js);

  // Evaluates `js_predicate` every 50 ms until its value is truthy: true when it became so,
  // false when `deadline` passed. A predicate that throws (say, on an element not rendered yet)
  // counts as false, except a SyntaxError, which is thrown at once.
  bool WaitFor(const std::string& js_predicate, std::chrono::milliseconds deadline);

  // Clicks the centre of the first element matching `css_selector` with real mouse events
  // (scrolled into view first). Throws when nothing matches, the element has no size, or
  // another element covers its centre. It aims where the element is now: WaitFor the page to have
  // rendered what could still move it.
  void Click(const std::string& css_selector);

  // Writes a PNG of the viewport to `png_path`. Throws if it cannot.
  void Screenshot(const std::string& png_path);

  // Console messages of level error or warning and uncaught exceptions of the page so far, one
  // line each: for a failing test to print.
  std::vector<std::string> ConsoleErrors() const { return console_errors_; }

  // The browser's process id, also its process group (for tests of the cleanup).
  pid_t pid() const { return pid_; }

 private:
  HeadlessBrowser() = default;

  // Sends a command (to the page when `to_page`, else to the browser) and returns its result;
  // throws on a CDP error or when no answer came by `deadline`.
  nlohmann::json Call(const std::string& method, const nlohmann::json& params, bool to_page,
                      std::chrono::steady_clock::time_point deadline);
  nlohmann::json Call(const std::string& method, const nlohmann::json& params = {},
                      bool to_page = true);
  // The next message from Chromium, or nullopt when none came by `deadline`.
  std::optional<nlohmann::json> NextMessage(std::chrono::steady_clock::time_point deadline);
  void WriteAll(const std::string& data, std::chrono::steady_clock::time_point deadline);
  void OnEvent(const nlohmann::json& message);
  // Runtime.evaluate's whole answer: `result`, and `exceptionDetails` when the script threw.
  nlohmann::json EvaluateRaw(const std::string& js, std::chrono::steady_clock::time_point deadline);
  void ReapCrashHandlers();
  [[noreturn]] void Fail(const std::string& what) const;
  std::string LogTail() const;

  pid_t pid_ = -1;
  int to_chrome_ = -1;    // our end of Chromium's fd 3
  int from_chrome_ = -1;  // our end of Chromium's fd 4
  std::string dir_;       // temporary directory: profile and log
  std::string session_id_;
  int next_id_ = 1;
  std::string buffer_;   // bytes read and not yet a whole message
  size_t scanned_ = 0;   // buffer_[0, scanned_) holds no NUL
  int load_events_ = 0;  // Page.loadEventFired seen on our page
  bool crashed_ = false;
  std::vector<std::string> console_errors_;
};

}  // namespace testing_support
