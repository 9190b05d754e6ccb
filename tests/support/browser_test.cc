// The headless-browser harness against a small page served by the test itself: what a console
// test needs (reading text and colours, clicking, screenshots) and how it fails (a JS exception,
// a server that is down or hangs).
#include "tests/support/browser.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace testing_support {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Three waves rendered by script from a JSON API, as the console will: a browser that does not
// run the script shows none. The button posts an approval back.
constexpr const char* kPage = R"(<!doctype html>
<html><head><meta charset="utf-8"><title>rollout fw-1.5.0</title>
<style>
  body { font-family: sans-serif; margin: 24px; background: #fff; }
  .wave { display: inline-block; width: 160px; padding: 12px; margin: 6px; color: #fff; }
  .passed { background-color: rgb(34, 139, 34); }
  .running { background-color: rgb(30, 144, 255); }
  .pending { background-color: rgb(128, 128, 128); }
  #approve { font-size: 18px; padding: 8px 16px; }
</style></head>
<body>
  <h1>Rollout fw-1.5.0</h1>
  <div id="waves"></div>
  <button id="approve">Approve wave 3</button>
  <p id="status">awaiting approval</p>
  <script>
    fetch('/api/waves').then(r => r.json()).then(waves => {
      for (const w of waves) {
        const div = document.createElement('div');
        div.className = 'wave ' + w.state;
        div.dataset.wave = w.wave;
        div.innerHTML = '<b>wave ' + w.wave + '</b> <span class="count">' + w.succeeded +
                        '/' + w.devices + '</span>';
        document.getElementById('waves').appendChild(div);
      }
    });
    document.getElementById('approve').addEventListener('click', async () => {
      const r = await fetch('/api/approve', {method: 'POST', body: JSON.stringify({wave: 3})});
      document.getElementById('status').textContent = r.ok ? 'approved' : 'error ' + r.status;
    });
  </script>
</body></html>)";

// The page's server on 127.0.0.1 and an ephemeral port, recording the POSTs it receives.
class PageServer {
 public:
  PageServer() {
    server_.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kPage, "text/html; charset=utf-8");
    });
    server_.Get("/api/waves", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"([{"wave":1,"state":"passed","devices":10,"succeeded":10},
                          {"wave":2,"state":"running","devices":100,"succeeded":42},
                          {"wave":3,"state":"pending","devices":890,"succeeded":0}])",
                      "application/json");
    });
    server_.Post("/api/approve", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        posts_.push_back(req.body);
      }
      posted_.notify_all();
      res.set_content("{}", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    // bind_to_any_port already listens: the browser's connections wait in the backlog.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~PageServer() {
    server_.stop();
    thread_.join();
  }

  std::string Url(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // The first POST body to /api/approve, or "" if none came within `deadline`.
  std::string WaitForPost(std::chrono::milliseconds deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    posted_.wait_for(lock, deadline, [this] { return !posts_.empty(); });
    return posts_.empty() ? "" : posts_.front();
  }
  size_t PostCount() {
    std::lock_guard<std::mutex> lock(mu_);
    return posts_.size();
  }

 private:
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable posted_;
  std::vector<std::string> posts_;
};

// A TCP socket on 127.0.0.1 and an ephemeral port; listening or not.
class Socket {
 public:
  explicit Socket(bool listening) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        (listening && listen(fd_, 16) != 0)) {
      throw std::runtime_error("cannot set up a socket on 127.0.0.1");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~Socket() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = -1;
};

class BrowserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto start = Clock::now();
    std::string why_not;
    browser_ = HeadlessBrowser::Launch(&why_not);
    if (!browser_) GTEST_SKIP() << why_not;
    RecordProperty(
        "launch_ms",
        static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()));
  }
  void TearDown() override {
    if (browser_ && HasFailure()) {
      for (const auto& line : browser_->ConsoleErrors()) ADD_FAILURE() << "page: " << line;
    }
  }

  PageServer server_;
  std::unique_ptr<HeadlessBrowser> browser_;
};

TEST_F(BrowserTest, ReadsTheTextCountsAndColoursThePageRenders) {
  browser_->Navigate(server_.Url());
  EXPECT_EQ(browser_->Evaluate("document.title"), "rollout fw-1.5.0");
  ASSERT_TRUE(browser_->WaitFor("document.querySelectorAll('.wave').length === 3", 10s));

  EXPECT_EQ(browser_->Evaluate("document.querySelector('[data-wave=\"2\"] .count').textContent"),
            "42/100");
  auto colours = browser_->Evaluate(
      "[...document.querySelectorAll('.wave')].map(e => getComputedStyle(e).backgroundColor)");
  EXPECT_EQ(colours,
            nlohmann::json({"rgb(34, 139, 34)", "rgb(30, 144, 255)", "rgb(128, 128, 128)"}));
  EXPECT_EQ(browser_->Evaluate("[innerWidth, innerHeight]"), nlohmann::json({1280, 900}));
  EXPECT_EQ(browser_->Evaluate("Promise.resolve(6 * 7)"), 42) << "a promise is awaited";
  EXPECT_TRUE(browser_->Evaluate("undefined").is_null());
  EXPECT_TRUE(browser_->ConsoleErrors().empty());
}

TEST_F(BrowserTest, AClickPostsToTheServer) {
  browser_->Navigate(server_.Url());
  // The waves render after the load and push the button down: wait for them before aiming.
  ASSERT_TRUE(browser_->WaitFor("document.querySelectorAll('.wave').length === 3", 10s));
  browser_->Click("#approve");
  EXPECT_EQ(nlohmann::json::parse(server_.WaitForPost(10s)), nlohmann::json({{"wave", 3}}));
  EXPECT_TRUE(
      browser_->WaitFor("document.getElementById('status').textContent === 'approved'", 10s));
  EXPECT_EQ(server_.PostCount(), 1u);

  try {
    browser_->Click("#deny");
    FAIL() << "clicking nothing must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "Click(\"#deny\"): no element matches");
  }
  // A button hidden under an overlay cannot be clicked by a person, nor by the harness.
  browser_->Evaluate(R"({
    const overlay = document.createElement('div');
    overlay.style.cssText = 'position:fixed;inset:0;background:rgba(0,0,0,0.5)';
    document.body.appendChild(overlay);
  })");
  EXPECT_THROW(browser_->Click("#approve"), std::runtime_error);
  EXPECT_EQ(server_.PostCount(), 1u);
}

TEST_F(BrowserTest, AScreenshotIsAPngOfTheViewport) {
  browser_->Navigate(server_.Url());
  ASSERT_TRUE(browser_->WaitFor("document.querySelectorAll('.wave').length === 3", 10s));
  const std::string path = ::testing::TempDir() + "browser_test_screenshot.png";
  browser_->Screenshot(path);

  std::ifstream file(path, std::ios::binary);
  std::string png((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_GE(png.size(), 24u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) {
    return (static_cast<unsigned char>(png[at]) << 24) |
           (static_cast<unsigned char>(png[at + 1]) << 16) |
           (static_cast<unsigned char>(png[at + 2]) << 8) | static_cast<unsigned char>(png[at + 3]);
  };
  EXPECT_EQ(be32(16), 1280) << "IHDR width";
  EXPECT_EQ(be32(20), 900) << "IHDR height";
  EXPECT_GT(png.size(), 5000u) << "a page with text and coloured boxes, not a blank image";
  std::filesystem::remove(path);
}

TEST_F(BrowserTest, AJavaScriptExceptionIsReportedWithChromesText) {
  browser_->Navigate(server_.Url());
  try {
    browser_->Evaluate("noSuchThing.length");
    FAIL() << "a ReferenceError must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("ReferenceError: noSuchThing is not defined"),
              std::string::npos)
        << e.what();
  }
  try {
    browser_->Evaluate("Promise.reject(new Error('wave 2 is missing'))");
    FAIL() << "a rejected promise must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("Error: wave 2 is missing"), std::string::npos)
        << e.what();
  }
  // A predicate that cannot become true is given up at its deadline; one that is not JavaScript
  // at once.
  auto start = Clock::now();
  EXPECT_FALSE(browser_->WaitFor("document.querySelector('#never').textContent", 300ms));
  EXPECT_LT(Clock::now() - start, 3s);
  EXPECT_THROW(browser_->WaitFor("document.title ===", 10s), std::runtime_error);

  // An uncaught exception of the page's own code is collected for the failure message.
  browser_->Evaluate("setTimeout(() => { throw new Error('render failed'); }, 0); 1");
  ASSERT_TRUE(browser_->WaitFor("new Promise(r => setTimeout(() => r(true), 20))", 5s));
  auto errors = browser_->ConsoleErrors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("render failed"), std::string::npos) << errors[0];
}

TEST_F(BrowserTest, ANavigationToAServerThatIsDownFailsWithinTheDeadline) {
  int closed_port = Socket(false).port();  // bound and closed: nobody listens there
  auto start = Clock::now();
  try {
    browser_->Navigate("http://127.0.0.1:" + std::to_string(closed_port) + "/", 5s);
    FAIL() << "navigating to a closed port must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("ERR_CONNECTION_REFUSED"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 5s);

  // A server that accepts the connection and never answers: the deadline ends the wait.
  Socket silent(true);
  start = Clock::now();
  EXPECT_THROW(browser_->Navigate("http://127.0.0.1:" + std::to_string(silent.port()) + "/", 1s),
               std::runtime_error);
  auto waited = Clock::now() - start;
  EXPECT_GE(waited, 1s);
  EXPECT_LT(waited, 5s);

  // The browser is still usable afterwards.
  browser_->Navigate(server_.Url());
  EXPECT_EQ(browser_->Evaluate("document.title"), "rollout fw-1.5.0");
}

// Our children (zombies included) whose command name starts with "chrom".
std::vector<std::string> ChromiumChildren() {
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream file(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == getpid() && stat.compare(open + 1, 5, "chrom") == 0) found.push_back(stat);
  }
  return found;
}

TEST_F(BrowserTest, NoChromiumProcessOutlivesTheBrowser) {
  const pid_t group = browser_->pid();
  browser_->Navigate(server_.Url());
  ASSERT_EQ(kill(-group, 0), 0) << "the browser runs in its own process group";
  browser_.reset();
  EXPECT_EQ(kill(-group, 0), -1) << "a process of the browser's group is left";
  EXPECT_EQ(errno, ESRCH);
  EXPECT_THAT(ChromiumChildren(), ::testing::IsEmpty()) << "its crash handlers, alive or zombies";
}

// What the skip message says when there is no browser to run, or it does not start.
TEST(BrowserLaunchTest, AMissingOrBrokenBrowserGivesTheReason) {
  std::string why_not;
  setenv("FLEETWAVE_CHROMIUM", "/nonexistent/chromium", 1);
  EXPECT_EQ(HeadlessBrowser::Launch(&why_not), nullptr);
  EXPECT_EQ(why_not, "FLEETWAVE_CHROMIUM=/nonexistent/chromium is not an executable file");

  setenv("FLEETWAVE_CHROMIUM", "/bin/false", 1);
  auto start = Clock::now();
  EXPECT_EQ(HeadlessBrowser::Launch(&why_not), nullptr);
  EXPECT_LT(Clock::now() - start, 10s);
  EXPECT_NE(why_not.find("Chromium (/bin/false) did not start: Chromium closed the DevTools pipe"),
            std::string::npos)
      << why_not;
  unsetenv("FLEETWAVE_CHROMIUM");
}

}  // namespace
}  // namespace testing_support
