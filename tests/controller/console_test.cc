// The console (GET /) in a real browser: Debian's headless Chromium against the controller's HTTP
// server over a PostgreSQL holding a cycle in progress (the rollout fixture, and two more
// rollouts so that every wave colour shows). Checks the waves' colours and counts, the history,
// takes a screenshot, and approves the pending wave with the page's button.
// Skipped, with the reason, only where no Chromium can run (scripts/bootstrap installs it).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "controller/http_server.h"
#include "tests/controller/rollout_fixture.h"
#include "tests/support/browser.h"
#include "tests/support/test_device.h"

namespace {

using namespace std::chrono_literals;
using testing::HasSubstr;
using testing_support::HeadlessBrowser;
using testing_support::kCurrent;

// The console's colours (controller/console.html) as the browser computes them.
constexpr char kGreen[] = "rgb(46, 125, 50)";
constexpr char kOrange[] = "rgb(239, 108, 0)";
constexpr char kRed[] = "rgb(198, 40, 40)";
constexpr char kGrey[] = "rgb(158, 158, 158)";
constexpr char kBlue[] = "rgb(21, 101, 192)";

class ConsoleTest : public testing_support::RolloutFixture {
 protected:
  void SetUp() override {
    RolloutFixture::SetUp();
    // kCurrent: wave 1 passed, wave 2 passed with caught failures, wave 3 awaits approval.
    AwaitApproval();
    Exec(
        "update fleetwave.waves set verdict = 'passed_with_failures' "
        "where rollout_id = 'fw-arm-1.2.0-c2' and wave = 2");
    // Two more rollouts of cycle 2: one a gate paused (wave 2 failed), one running.
    Exec(
        "insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
        "('arm', '1.3.0', 'k130', 'https://fw.example.com/1.3.0', repeat('c', 64), 10)");
    AddRollout("fw-arm-1.1.0-c2", 2, "1.1.0", "paused", {"passed", "failed", "canceled"});
    Exec(
        "update fleetwave.waves set verdict = 'failed' "
        "where rollout_id = 'fw-arm-1.1.0-c2' and wave = 2");
    AddRollout("fw-arm-1.3.0-c2", 2, "1.3.0", "running", {"running", "pending"});

    controller::HttpOptions o;
    o.address = "127.0.0.1:0";
    o.db = database_.conninfo();
    o.mqtt_uri = testing_support::BrokerUri();
    server_ = std::make_unique<controller::HttpServer>(o);
    server_->Start();
    url_ = "http://127.0.0.1:" + std::to_string(server_->port()) + "/";
  }

  // The computed background colour of wave `wave`'s node in the path of `rollout`.
  std::string NodeColour(HeadlessBrowser& b, const std::string& rollout, int wave) {
    return b
        .Evaluate("getComputedStyle(document.querySelector('section[data-rollout=\"" + rollout +
                  "\"] .node[data-wave=\"" + std::to_string(wave) + "\"]')).backgroundColor")
        .get<std::string>();
  }
  std::string Text(HeadlessBrowser& b, const std::string& selector) {
    return b.Evaluate("document.querySelector('" + selector + "').textContent").get<std::string>();
  }

  // Polls the database until `sql` is true, at most `deadline`.
  bool WaitForSql(const std::string& sql, std::chrono::milliseconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      if (Scalar(sql) == "t") return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  std::unique_ptr<controller::HttpServer> server_;
  std::string url_;
};

TEST_F(ConsoleTest, ShowsTheWavesInColourWithCountsAndApprovesByItsButton) {
  std::string why_not;
  auto browser = HeadlessBrowser::Launch(&why_not);
  if (!browser) GTEST_SKIP() << why_not;
  HeadlessBrowser& b = *browser;

  b.Navigate(url_);
  ASSERT_TRUE(
      b.WaitFor("document.body.dataset.loaded === 'true' && "
                "document.querySelectorAll('section.rollout').length === 3",
                20s))
      << "console errors: " << testing::PrintToString(b.ConsoleErrors());

  // The current cycle is selected, with both cycles listed.
  EXPECT_THAT(Text(b, "#cycle-title"), HasSubstr("Cycle 2 (current)"));
  EXPECT_EQ(b.Evaluate("document.querySelectorAll('#cycles li').length"), 2);

  // Each wave a node of the path, coloured by its state and verdict.
  EXPECT_EQ(NodeColour(b, kCurrent, 1), kGreen);
  EXPECT_EQ(NodeColour(b, kCurrent, 2), kOrange);
  EXPECT_EQ(NodeColour(b, kCurrent, 3), kGrey);
  EXPECT_EQ(NodeColour(b, "fw-arm-1.1.0-c2", 1), kGreen);
  EXPECT_EQ(NodeColour(b, "fw-arm-1.1.0-c2", 2), kRed);
  EXPECT_EQ(NodeColour(b, "fw-arm-1.1.0-c2", 3), kGrey);
  EXPECT_EQ(NodeColour(b, "fw-arm-1.3.0-c2", 1), kBlue);
  EXPECT_EQ(NodeColour(b, "fw-arm-1.3.0-c2", 2), kGrey);

  // Each wave's bar with its counts (wave 2 of kCurrent: the fixture's executions).
  EXPECT_EQ(Text(b, "section[data-rollout=\"fw-arm-1.2.0-c2\"] tr[data-wave=\"2\"] .counts"),
            "2 succeeded, 2 failed, 1 in progress, 1 queued of 2");
  EXPECT_EQ(Text(b, "section[data-rollout=\"fw-arm-1.2.0-c2\"] tr[data-wave=\"1\"] .counts"),
            "1 succeeded, 0 failed, 0 in progress, 0 queued of 2");
  // The execution history of the cycle, newest first.
  EXPECT_THAT(Text(b, "#history tr:first-child"), HasSubstr("wave_started"));

  const std::string png = ::testing::TempDir() + "fleetwave-console.png";
  b.Screenshot(png);
  EXPECT_GT(std::filesystem::file_size(png), 10000u);
  std::printf("console screenshot: %s\n", png.c_str());

  // The pending approval, decided with its button.
  ASSERT_TRUE(b.WaitFor("document.querySelector('.approval button.approve') !== null", 5s));
  EXPECT_THAT(Text(b, ".approval"), HasSubstr("awaits approval of wave 3"));
  b.Click(".approval button.approve");
  EXPECT_TRUE(
      WaitForSql("select state = 'running' from fleetwave.rollouts "
                 "where id = 'fw-arm-1.2.0-c2'",
                 10s));
  EXPECT_EQ(Scalar("select state || ' ' || (decided_by like 'link:%') from fleetwave.approvals"),
            "approved true");
  // The page refreshes by itself: the approval is gone.
  EXPECT_TRUE(b.WaitFor("document.querySelectorAll('.approval button').length === 0", 10s));

  // An earlier cycle, picked in the list: its rollout's path, all green.
  b.Click("#cycles li[data-cycle=\"1\"]");
  ASSERT_TRUE(
      b.WaitFor("document.querySelector('section[data-rollout=\"fw-arm-1.1.0-c1\"]') "
                "!== null && document.querySelectorAll('section.rollout').length === 1",
                10s));
  EXPECT_THAT(Text(b, "#cycle-title"), testing::StrEq("Cycle 1"));
  for (int wave = 1; wave <= 3; ++wave) EXPECT_EQ(NodeColour(b, "fw-arm-1.1.0-c1", wave), kGreen);
  // Its history follows the rollouts (the page reads it next).
  EXPECT_TRUE(
      b.WaitFor("document.querySelector('#history').textContent.includes("
                "'all_waves_passed')",
                10s))
      << Text(b, "#history");
  EXPECT_THAT(b.ConsoleErrors(), testing::IsEmpty());
}

}  // namespace
