#include "tests/support/browser.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace testing_support {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A single CDP command should never take long; this only bounds a hung browser.
constexpr auto kCommandDeadline = std::chrono::seconds(30);
constexpr auto kLaunchDeadline = std::chrono::seconds(30);
constexpr int kWidth = 1280;
constexpr int kHeight = 900;

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// The Chromium to run, or "" with *why_not set.
std::string FindChromium(std::string* why_not) {
  if (const char* forced = std::getenv("FLEETWAVE_CHROMIUM"); forced && *forced) {
    if (access(forced, X_OK) == 0) return forced;
    *why_not = std::string("FLEETWAVE_CHROMIUM=") + forced + " is not an executable file";
    return "";
  }
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    if (std::string found = FindOnPath(name); !found.empty()) return found;
  }
  *why_not =
      "no headless browser found: none of chromium, chromium-browser, google-chrome is on PATH "
      "(scripts/bootstrap installs Debian's chromium package; FLEETWAVE_CHROMIUM names another)";
  return "";
}

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left + 1, 60'000));
}

std::string Base64Decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  unsigned bits = 0;
  int count = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) continue;  // '=' padding
    bits = (bits << 6) | static_cast<unsigned>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  return out;
}

// JavaScript truthiness of a value returned by value (undefined and NaN arrive as null).
bool Truthy(const nlohmann::json& v) {
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return v.get<double>() != 0;
  if (v.is_string()) return !v.get<std::string>().empty();
  return true;
}

// Chrome's words for an exception: "ReferenceError: x is not defined\n    at <anonymous>:1:1".
std::string ExceptionText(const nlohmann::json& details) {
  const auto& exception = details.value("exception", nlohmann::json::object());
  if (exception.contains("description")) return exception["description"].get<std::string>();
  if (exception.contains("value")) return "Uncaught " + exception["value"].dump();
  return details.value("text", std::string("an exception"));
}

// The contents of a small file such as /proc/<pid>/stat, or "" if it cannot be read (the process
// may be gone): never throws, as the destructor uses it.
std::string ReadProcFile(const std::string& path) {
  std::string text;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char chunk[4096];
  for (ssize_t n; (n = read(fd, chunk, sizeof chunk)) > 0;)
    text.append(chunk, static_cast<size_t>(n));
  close(fd);
  return text;
}

std::string Shorten(const std::string& s, size_t n = 200) {
  return s.size() <= n ? s : s.substr(0, n) + "…";
}

}  // namespace

std::unique_ptr<HeadlessBrowser> HeadlessBrowser::Launch(std::string* why_not) {
  std::string binary = FindChromium(why_not);
  if (binary.empty()) return nullptr;
  // A write to a browser that died must fail with EPIPE, not kill the test.
  signal(SIGPIPE, SIG_IGN);
  // Chromium's helper processes outlive its main process by a moment; as the subreaper, the
  // test process inherits and reaps them instead of leaving zombies to init.
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  std::unique_ptr<HeadlessBrowser> browser(new HeadlessBrowser);
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/fleetwave-browser-XXXXXX";
  if (!mkdtemp(pattern.data())) {
    *why_not = "cannot create a temporary directory " + pattern + ": " + std::strerror(errno);
    return nullptr;
  }
  browser->dir_ = pattern;
  const std::string log_path = browser->dir_ + "/chromium.log";

  std::vector<std::string> argv = {
      binary,
      "--headless=new",
      "--no-sandbox",  // tests run as root, where the sandbox refuses to start
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--mute-audio",
      "--hide-scrollbars",
      "--user-data-dir=" + browser->dir_ + "/profile",
      "--remote-debugging-pipe",
      "--window-size=" + std::to_string(kWidth) + "," + std::to_string(kHeight),
      "about:blank"};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  // HOME in the temporary directory too: Chromium keeps its crash database and caches under
  // ~/.config and ~/.cache, which must neither outlive the test nor be shared between tests.
  std::vector<std::string> env_strings = {"HOME=" + browser->dir_};
  for (char** e = environ; *e; ++e) {
    std::string_view entry(*e);
    if (!entry.starts_with("HOME=") && !entry.starts_with("XDG_CONFIG_HOME=") &&
        !entry.starts_with("XDG_CACHE_HOME=")) {
      env_strings.emplace_back(entry);
    }
  }
  std::vector<char*> env;
  for (auto& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);

  int commands[2], answers[2];  // [0] read end, [1] write end
  if (pipe2(commands, O_CLOEXEC) != 0 || pipe2(answers, O_CLOEXEC) != 0) {
    *why_not = std::string("pipe failed: ") + std::strerror(errno);
    return nullptr;
  }
  pid_t pid = fork();
  if (pid < 0) {
    *why_not = std::string("fork failed: ") + std::strerror(errno);
    for (int fd : {commands[0], commands[1], answers[0], answers[1]}) close(fd);
    return nullptr;
  }
  if (pid == 0) {
    // Only async-signal-safe calls here: the test may run server threads.
    setsid();  // its own process group, so the destructor can kill every helper process
    int in = fcntl(commands[0], F_DUPFD, 10);
    int out = fcntl(answers[1], F_DUPFD, 10);
    if (in < 0 || out < 0 || dup2(in, 3) < 0 || dup2(out, 4) < 0) _exit(126);
    int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int devnull = open("/dev/null", O_RDONLY);
    if (log < 0 || devnull < 0) _exit(126);
    dup2(devnull, 0);
    dup2(log, 1);
    dup2(log, 2);
    close_range(5, ~0U, 0);  // no listening socket of the test leaks into the browser
    execve(args[0], args.data(), env.data());
    _exit(127);
  }
  close(commands[0]);
  close(answers[1]);
  browser->pid_ = pid;
  browser->to_chrome_ = commands[1];
  browser->from_chrome_ = answers[0];
  fcntl(browser->to_chrome_, F_SETFL, O_NONBLOCK);
  fcntl(browser->from_chrome_, F_SETFL, O_NONBLOCK);

  try {
    auto deadline = Clock::now() + kLaunchDeadline;
    auto target = browser->Call("Target.createTarget", {{"url", "about:blank"}}, false, deadline);
    auto attached =
        browser->Call("Target.attachToTarget",
                      {{"targetId", target.at("targetId")}, {"flatten", true}}, false, deadline);
    browser->session_id_ = attached.at("sessionId").get<std::string>();
    browser->Call("Page.enable", {}, true, deadline);
    browser->Call("Runtime.enable", {}, true, deadline);
    browser->Call(
        "Emulation.setDeviceMetricsOverride",
        {{"width", kWidth}, {"height", kHeight}, {"deviceScaleFactor", 1}, {"mobile", false}}, true,
        deadline);
  } catch (const std::exception& e) {
    *why_not = "Chromium (" + binary + ") did not start: " + e.what();
    return nullptr;  // the destructor stops what was started
  }
  return browser;
}

HeadlessBrowser::~HeadlessBrowser() {
  if (pid_ > 0) {
    // The profile is thrown away, so there is nothing to close gracefully: a SIGKILL to the
    // whole group is immediate and also ends a hung browser. Helpers whose parent dies first are
    // re-parented to us (the subreaper, see Launch) and reaped here, so none lingers as a zombie.
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    for (auto deadline = Clock::now() + std::chrono::seconds(5);
         kill(-pid_, 0) == 0 && Clock::now() < deadline;) {
      if (waitpid(-pid_, nullptr, WNOHANG) <= 0) poll(nullptr, 0, 5);
    }
    ReapCrashHandlers();
  }
  if (to_chrome_ >= 0) close(to_chrome_);
  if (from_chrome_ >= 0) close(from_chrome_);
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

// Chromium starts its crash handlers (chrome_crashpad_handler) detached, in sessions of their
// own, so the group kill misses them; they are our children (we are the subreaper). Ours are
// told apart by their crash database, under our temporary HOME; a dead one of any browser is
// reaped too, as nobody else will.
void HeadlessBrowser::ReapCrashHandlers() {
  std::error_code error;
  for (std::filesystem::directory_iterator it("/proc", error), end; !error && it != end;
       it.increment(error)) {
    const auto& entry = *it;
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = ReadProcFile(entry.path() / "stat");
    // "pid (comm) state ppid ...": comm may hold spaces, so parse from the last ')'.
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != getpid() || stat.compare(open + 1, 15, "chrome_crashpad") != 0) continue;
    const pid_t pid = std::stoi(name);
    if (state != 'Z') {
      // An exiting process has already lost its command line (empty) but is not a zombie yet:
      // it is ours to reap as well, and waitpid returns as soon as it is one.
      const std::string cmdline = ReadProcFile(entry.path() / "cmdline");
      if (!cmdline.empty() && cmdline.find(dir_ + "/") == std::string::npos)
        continue;          // another browser's
      kill(pid, SIGKILL);  // safe by pid: an unreaped child's pid cannot be reused
    }
    waitpid(pid, nullptr, 0);
  }
}

void HeadlessBrowser::Navigate(const std::string& url, milliseconds deadline_in) {
  auto deadline = Clock::now() + deadline_in;
  int loads_before = load_events_;
  auto result = Call("Page.navigate", {{"url", url}}, true, deadline);
  if (result.contains("errorText") && !result["errorText"].get<std::string>().empty()) {
    throw std::runtime_error("navigating to " + url +
                             " failed: " + result["errorText"].get<std::string>());
  }
  if (!result.contains("loaderId")) return;  // same-document (#fragment): no load event comes
  while (load_events_ == loads_before) {
    auto message = NextMessage(deadline);
    if (!message) {
      throw std::runtime_error("navigating to " + url +
                               ": the page did not finish loading within " +
                               std::to_string(deadline_in.count()) + " ms");
    }
    if (message->contains("method")) OnEvent(*message);
    if (crashed_) Fail("the page crashed while loading " + url);
  }
}

nlohmann::json HeadlessBrowser::EvaluateRaw(const std::string& js, Clock::time_point deadline) {
  return Call(
      "Runtime.evaluate",
      {{"expression", js}, {"returnByValue", true}, {"awaitPromise", true}, {"userGesture", true}},
      true, deadline);
}

nlohmann::json HeadlessBrowser::Evaluate(const std::string& js) {
  auto answer = EvaluateRaw(js, Clock::now() + kCommandDeadline);
  if (answer.contains("exceptionDetails")) {
    throw std::runtime_error("JavaScript threw " + ExceptionText(answer["exceptionDetails"]) +
                             "\n  evaluating: " + Shorten(js));
  }
  return answer.at("result").value("value", nlohmann::json());
}

bool HeadlessBrowser::WaitFor(const std::string& js_predicate, milliseconds deadline_in) {
  auto deadline = Clock::now() + deadline_in;
  for (;;) {
    // Each evaluation gets at least a few seconds: a slow answer is not a false predicate.
    auto answer =
        EvaluateRaw(js_predicate, std::max(deadline, Clock::now() + std::chrono::seconds(5)));
    if (answer.contains("exceptionDetails")) {
      const auto& details = answer["exceptionDetails"];
      if (details.value("exception", nlohmann::json::object()).value("className", "") ==
          "SyntaxError") {
        throw std::runtime_error(
            "WaitFor: the predicate is not valid JavaScript: " + ExceptionText(details) +
            "\n  predicate: " + Shorten(js_predicate));
      }
    } else if (Truthy(answer.at("result").value("value", nlohmann::json()))) {
      return true;
    }
    if (Clock::now() >= deadline) return false;
    // Between polls, take in Chromium's events (console errors, a crash) instead of sleeping.
    auto next_poll = std::min(deadline, Clock::now() + milliseconds(50));
    while (auto message = NextMessage(next_poll)) {
      if (message->contains("method")) OnEvent(*message);
    }
    if (crashed_) Fail("the page crashed while waiting for " + Shorten(js_predicate));
  }
}

void HeadlessBrowser::Click(const std::string& css_selector) {
  // Find the element's centre as a person would aim at it; refuse what a person could not click.
  const std::string js = R"((() => {
    const el = document.querySelector()" +
                         nlohmann::json(css_selector).dump() + R"();
    if (!el) return {error: 'no element matches'};
    el.scrollIntoView({block: 'center', inline: 'center'});
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return {error: 'the element has no size (hidden?)'};
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    const hit = document.elementFromPoint(x, y);
    if (hit !== el && !el.contains(hit)) {
      return {error: 'the element is covered at its centre by ' +
                     (hit ? hit.outerHTML.slice(0, 120) : 'nothing (outside the viewport)')};
    }
    return {x, y};
  })())";
  auto where = Evaluate(js);
  if (where.contains("error")) {
    throw std::runtime_error("Click(\"" + css_selector +
                             "\"): " + where["error"].get<std::string>());
  }
  double x = where.at("x").get<double>(), y = where.at("y").get<double>();
  Call("Input.dispatchMouseEvent", {{"type", "mouseMoved"}, {"x", x}, {"y", y}});
  Call("Input.dispatchMouseEvent", {{"type", "mousePressed"},
                                    {"x", x},
                                    {"y", y},
                                    {"button", "left"},
                                    {"buttons", 1},
                                    {"clickCount", 1}});
  Call("Input.dispatchMouseEvent", {{"type", "mouseReleased"},
                                    {"x", x},
                                    {"y", y},
                                    {"button", "left"},
                                    {"buttons", 0},
                                    {"clickCount", 1}});
}

void HeadlessBrowser::Screenshot(const std::string& png_path) {
  auto shot = Call("Page.captureScreenshot", {{"format", "png"}});
  std::string png = Base64Decode(shot.at("data").get<std::string>());
  std::ofstream out(png_path, std::ios::binary | std::ios::trunc);
  out.write(png.data(), static_cast<std::streamsize>(png.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write the screenshot to " + png_path);
}

nlohmann::json HeadlessBrowser::Call(const std::string& method, const nlohmann::json& params,
                                     bool to_page) {
  return Call(method, params, to_page, Clock::now() + kCommandDeadline);
}

nlohmann::json HeadlessBrowser::Call(const std::string& method, const nlohmann::json& params,
                                     bool to_page, Clock::time_point deadline) {
  const int id = next_id_++;
  nlohmann::json message = {{"id", id},
                            {"method", method},
                            {"params", params.is_null() ? nlohmann::json::object() : params}};
  if (to_page) message["sessionId"] = session_id_;
  WriteAll(message.dump() + '\0', deadline);
  for (;;) {
    auto answer = NextMessage(deadline);
    if (!answer) Fail("Chromium did not answer " + method + " in time");
    if (answer->contains("method")) {
      OnEvent(*answer);
      if (crashed_) Fail("the page crashed during " + method);
      continue;
    }
    // An answer to an earlier command that ran out of time is dropped here.
    if (answer->value("id", -1) != id) continue;
    if (answer->contains("error")) {
      const auto& error = (*answer)["error"];
      throw std::runtime_error("CDP " + method + " failed: " + error.value("message", "") +
                               (error.contains("data") ? " (" + error["data"].dump() + ")" : ""));
    }
    return answer->value("result", nlohmann::json::object());
  }
}

std::optional<nlohmann::json> HeadlessBrowser::NextMessage(Clock::time_point deadline) {
  for (;;) {
    size_t end = buffer_.find('\0', scanned_);
    if (end != std::string::npos) {
      std::string text = buffer_.substr(0, end);
      buffer_.erase(0, end + 1);
      scanned_ = 0;
      try {
        return nlohmann::json::parse(text);
      } catch (const std::exception& e) {
        Fail("Chromium sent a message that is not JSON (" + std::string(e.what()) +
             "): " + Shorten(text));
      }
    }
    scanned_ = buffer_.size();
    if (Clock::now() >= deadline) return std::nullopt;
    pollfd p = {from_chrome_, POLLIN, 0};
    int ready = poll(&p, 1, RemainingMs(deadline));
    if (ready < 0 && errno != EINTR) Fail(std::string("poll failed: ") + std::strerror(errno));
    if (ready <= 0) continue;
    char chunk[65536];
    ssize_t n = read(from_chrome_, chunk, sizeof chunk);
    if (n == 0) Fail("Chromium closed the DevTools pipe (it exited or crashed)");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      Fail(std::string("reading from Chromium failed: ") + std::strerror(errno));
    }
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

void HeadlessBrowser::WriteAll(const std::string& data, Clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(to_chrome_, data.data() + done, data.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      Fail(std::string("writing to Chromium failed: ") + std::strerror(errno));
    }
    if (Clock::now() >= deadline) Fail("Chromium did not take a command in time");
    pollfd p = {to_chrome_, POLLOUT, 0};
    poll(&p, 1, RemainingMs(deadline));
  }
}

void HeadlessBrowser::OnEvent(const nlohmann::json& message) {
  if (message.value("sessionId", "") != session_id_) return;  // the browser's, or another tab's
  const std::string method = message.value("method", "");
  const auto& params = message.value("params", nlohmann::json::object());
  if (method == "Page.loadEventFired") {
    ++load_events_;
  } else if (method == "Inspector.targetCrashed") {
    crashed_ = true;
  } else if (method == "Runtime.exceptionThrown") {
    console_errors_.push_back("uncaught " +
                              ExceptionText(params.value("exceptionDetails", nlohmann::json())));
  } else if (method == "Runtime.consoleAPICalled") {
    const std::string type = params.value("type", "");
    if (type != "error" && type != "warning" && type != "assert") return;
    std::string line = "console." + type + ":";
    for (const auto& arg : params.value("args", nlohmann::json::array())) {
      line +=
          " " + (arg.contains("value") ? (arg["value"].is_string() ? arg["value"].get<std::string>()
                                                                   : arg["value"].dump())
                                       : arg.value("description", std::string("?")));
    }
    console_errors_.push_back(line);
  }
}

std::string HeadlessBrowser::LogTail() const {
  std::ifstream log(dir_ + "/chromium.log");
  std::deque<std::string> last;
  for (std::string line; std::getline(log, line);) {
    // Without a D-Bus (as in a container or CI) Chromium logs a dozen harmless errors about it.
    if (line.find("dbus") != std::string::npos) continue;
    last.push_back(line);
    if (last.size() > 15) last.pop_front();
  }
  std::string tail;
  for (const auto& line : last) tail += "\n  " + line;
  return tail.empty() ? " (empty)" : tail;
}

void HeadlessBrowser::Fail(const std::string& what) const {
  throw std::runtime_error(what + "; the last lines of Chromium's log:" + LogTail());
}

}  // namespace testing_support
