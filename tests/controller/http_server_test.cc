// The controller's HTTP endpoints against a real PostgreSQL (the rollout fixture) and the test
// broker: each endpoint, each bad request, approval links (forged, expired, reused), the admin
// token, and a flood of bad requests.
#include "controller/http_server.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "controller/approval_token.h"
#include "tests/controller/rollout_fixture.h"
#include "tests/support/test_device.h"

namespace {

using Json = nlohmann::json;
using testing::HasSubstr;
using testing_support::kCurrent;
using testing_support::kOld;

constexpr char kAdminToken[] = "s3cret-admin-token";

class HttpServerTest : public testing_support::RolloutFixture {
 protected:
  void SetUp() override {
    RolloutFixture::SetUp();
    Start({});
  }

  void Start(controller::HttpOptions o) {
    if (server_) server_->Stop();
    o.address = "127.0.0.1:0";
    o.db = database_.conninfo();
    if (o.mqtt_uri.empty()) o.mqtt_uri = testing_support::BrokerUri();
    server_ = std::make_unique<controller::HttpServer>(o);
    server_->Start();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10, 0);
  }

  // The status and parsed JSON body of a request; fails the test when the body is not JSON.
  struct Reply {
    int status = 0;
    Json body;
    std::string text;
  };
  Reply Get(const std::string& path) { return ToReply(client_->Get(path.c_str()), path); }
  Reply Post(const std::string& path, const httplib::Headers& headers = {}) {
    return ToReply(client_->Post(path.c_str(), headers, "", "text/plain"), path);
  }
  Reply ToReply(const httplib::Result& r, const std::string& path) {
    Reply out;
    if (!r) {
      ADD_FAILURE() << path << ": no response (" << httplib::to_string(r.error()) << ")";
      return out;
    }
    out.status = r->status;
    out.text = r->body;
    if (r->get_header_value("Content-Type").find("application/json") == 0)
      out.body = Json::parse(r->body);
    return out;
  }
  // Expects a JSON error with `status` whose message has every part.
  void ExpectError(const Reply& r, int status, std::initializer_list<std::string> parts) {
    EXPECT_EQ(r.status, status) << r.text;
    ASSERT_TRUE(r.body.contains("error")) << r.text;
    EXPECT_EQ(r.body["error"]["status"], status);
    for (const auto& p : parts)
      EXPECT_THAT(r.body["error"]["message"].get<std::string>(), HasSubstr(p));
  }

  std::unique_ptr<controller::HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, HealthzSaysAlive) {
  auto r = client_->Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok\n");
}

TEST_F(HttpServerTest, ReadyzChecksTheDatabaseAndTheBroker) {
  Reply r = Get("/readyz");
  EXPECT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["ready"], true);
  EXPECT_EQ(r.body["database"], "ok");
  EXPECT_EQ(r.body["broker"], "ok");
  EXPECT_EQ(r.body["role"], "cli");

  controller::HttpOptions o;
  o.mqtt_uri = "tcp://127.0.0.1:1";  // nothing listens there
  o.role = [] { return std::string("standby"); };
  Start(o);
  r = Get("/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body["ready"], false);
  EXPECT_EQ(r.body["role"], "standby");
  EXPECT_EQ(r.body["database"], "ok");
  EXPECT_THAT(r.body["broker"].get<std::string>(), HasSubstr("unavailable: no connection to"));
}

TEST_F(HttpServerTest, StatusIsTheSameJsonAsTheCli) {
  Reply r = Get("/api/v1/status");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["schema"], 1);
  EXPECT_EQ(r.body["cycle"]["id"], 2);
  ASSERT_EQ(r.body["rollouts"].size(), 1u);
  EXPECT_EQ(r.body["rollouts"][0]["id"], kCurrent);
  EXPECT_EQ(r.body["rollouts"][0]["waves"][1]["executions"]["inProgress"], 1);
}

TEST_F(HttpServerTest, RolloutsListsAndFiltersByCycle) {
  Reply all = Get("/api/v1/rollouts");
  ASSERT_EQ(all.status, 200);
  ASSERT_EQ(all.body.size(), 2u);
  EXPECT_EQ(all.body[0]["id"], kCurrent);  // newest cycle first
  EXPECT_EQ(all.body[1]["id"], kOld);
  Reply one = Get("/api/v1/rollouts?cycle=1");
  ASSERT_EQ(one.body.size(), 1u);
  EXPECT_EQ(one.body[0]["id"], kOld);
  EXPECT_EQ(Get("/api/v1/rollouts?cycle=99").body, Json::array());
  ExpectError(Get("/api/v1/rollouts?cycle=abc"), 400, {"cycle=\"abc\"", "integer"});
}

TEST_F(HttpServerTest, OneRolloutWithItsWaves) {
  Reply r = Get(std::string("/api/v1/rollouts/") + kCurrent);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["state"], "running");
  ASSERT_EQ(r.body["waves"].size(), 3u);
  EXPECT_EQ(r.body["waves"][0]["verdict"], "passed");
  ExpectError(Get("/api/v1/rollouts/fw-nope-c9"), 404, {"no rollout fw-nope-c9"});
  ExpectError(Get("/api/v1/rollouts/bad%20id!"), 400, {"is invalid", "A-Z a-z 0-9"});
}

TEST_F(HttpServerTest, CyclesAndTheirEvents) {
  Reply cycles = Get("/api/v1/cycles");
  ASSERT_EQ(cycles.status, 200);
  ASSERT_EQ(cycles.body.size(), 2u);
  EXPECT_EQ(cycles.body[0]["id"], 2);
  EXPECT_EQ(cycles.body[0]["rolloutCount"], 1);
  EXPECT_EQ(Get("/api/v1/cycles?limit=1").body.size(), 1u);
  ExpectError(Get("/api/v1/cycles?limit=0"), 400, {"limit=\"0\""});

  Reply events = Get("/api/v1/cycles/2/events");
  ASSERT_EQ(events.status, 200);
  ASSERT_EQ(events.body.size(), 4u);
  EXPECT_EQ(events.body[0]["kind"], "cycle_started");
  EXPECT_EQ(events.body[3]["wave"], 2);
  EXPECT_EQ(Get("/api/v1/cycles/2/events?limit=1").body.size(), 1u);
  ExpectError(Get("/api/v1/cycles/9/events"), 404, {"no cycle 9"});
  ExpectError(Get("/api/v1/cycles/x/events"), 400, {"cycle id \"x\""});
}

TEST_F(HttpServerTest, UnknownEndpointsAndMethodsGetAJsonError) {
  ExpectError(Get("/api/v2/status"), 404, {"no endpoint GET /api/v2/status", "/api/v1/status"});
  ExpectError(Post("/api/v1/status"), 404, {"no endpoint POST /api/v1/status"});
}

TEST_F(HttpServerTest, MutatingEndpointsAreOffWithoutAnAdminToken) {
  const std::string path = std::string("/api/v1/rollouts/") + kCurrent + "/pause";
  ExpectError(Post(path, {{"Authorization", std::string("Bearer ") + kAdminToken}}), 403,
              {"FLEETWAVE_ADMIN_TOKEN"});
  EXPECT_EQ(RolloutState(kCurrent), "running");
}

TEST_F(HttpServerTest, PauseResumeAbortNeedTheAdminToken) {
  controller::HttpOptions o;
  o.admin_token = kAdminToken;
  Start(o);
  const std::string base = std::string("/api/v1/rollouts/") + kCurrent;
  const httplib::Headers good = {{"Authorization", std::string("Bearer ") + kAdminToken}};
  ExpectError(Post(base + "/pause"), 401, {"missing Authorization: Bearer"});
  ExpectError(Post(base + "/pause", {{"Authorization", "Bearer wrong"}}), 401, {"not the admin"});
  ExpectError(Post(base + "/pause", {{"Authorization", kAdminToken}}), 401, {"not the admin"});
  EXPECT_EQ(RolloutState(kCurrent), "running");

  Reply r = Post(base + "/pause", good);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["from"], "running");
  EXPECT_EQ(r.body["to"], "paused");
  EXPECT_EQ(RolloutState(kCurrent), "paused");
  EXPECT_THAT(Scalar("select detail->>'actor' from fleetwave.events order by id desc limit 1"),
              HasSubstr("http:127.0.0.1"));
  ExpectError(Post(base + "/pause", good), 409, {"is paused"});
  EXPECT_EQ(Post(base + "/resume", good).body["to"], "running");
  EXPECT_EQ(Post(base + "/abort", good).body["to"], "aborted");
  EXPECT_EQ(ReleaseState("1.2.0"), "halted");
  ExpectError(Post("/api/v1/rollouts/fw-nope-c9/pause", good), 404, {"no rollout"});
  ExpectError(Post("/api/v1/rollouts/" + std::string(kCurrent) + "/explode", good), 404,
              {"no endpoint"});
}

TEST_F(HttpServerTest, AnApprovalLinkShowsWhatItApprovesAndApprovesOnce) {
  const std::string token = AwaitApproval();
  auto page = client_->Get(("/approvals/" + token).c_str());
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("Approve wave 3 of fw-arm-1.2.0-c2?"));
  EXPECT_THAT(page->body, HasSubstr("arm 1.2.0"));
  EXPECT_THAT(page->body, HasSubstr("action=\"/approvals/" + token + "/approve\""));
  EXPECT_EQ(RolloutState(kCurrent), "awaiting_approval");  // looking changes nothing
  // Opening an approve link in a browser (a GET) leads to the page; only a POST decides.
  auto opened = client_->Get(("/approvals/" + token + "/approve").c_str());
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->status, 303);
  EXPECT_EQ(opened->get_header_value("Location"), "/approvals/" + token);
  EXPECT_EQ(RolloutState(kCurrent), "awaiting_approval");

  Reply r = Post("/approvals/" + token + "/approve", {{"Accept", "application/json"}});
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["decided"], "approved");
  EXPECT_EQ(RolloutState(kCurrent), "running");
  EXPECT_EQ(Scalar("select state || ' ' || decided_by from fleetwave.approvals"),
            "approved link:127.0.0.1");

  const int64_t events = Events();
  ExpectError(Post("/approvals/" + token + "/deny", {{"Accept", "application/json"}}), 409,
              {"already approved", "works once"});
  auto again = client_->Post(("/approvals/" + token + "/approve").c_str());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409);
  EXPECT_THAT(again->body, HasSubstr("already approved"));
  EXPECT_EQ(RolloutState(kCurrent), "running");
  EXPECT_EQ(Events(), events);
}

TEST_F(HttpServerTest, DenyAbortsTheRollout) {
  const std::string token = AwaitApproval();
  auto r = client_->Post(("/approvals/" + token + "/deny").c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("denied"));
  EXPECT_EQ(RolloutState(kCurrent), "aborted");
  EXPECT_EQ(ReleaseState("1.2.0"), "halted");
}

TEST_F(HttpServerTest, ForgedExpiredAndMalformedLinksChangeNothing) {
  const std::string token = AwaitApproval();
  const int64_t events = Events();
  auto expect_refused = [&](const std::string& t, int status, const std::string& words) {
    auto page = client_->Get(("/approvals/" + t).c_str());
    ASSERT_TRUE(page);
    EXPECT_EQ(page->status, status) << t;
    EXPECT_THAT(page->body, HasSubstr(words));
    Reply r = Post("/approvals/" + t + "/approve", {{"Accept", "application/json"}});
    ExpectError(r, status, {words});
    EXPECT_EQ(RolloutState(kCurrent), "awaiting_approval");
    EXPECT_EQ(Events(), events);
  };
  // Another MAC: a token nobody issued.
  std::string other_mac = token;
  other_mac.back() = other_mac.back() == '0' ? '1' : '0';
  expect_refused(other_mac, 404, "not valid");
  // A forged token planted in the database (its hash stored) still fails the MAC.
  Exec("update fleetwave.approvals set token_hash = '" + controller::HashToken(other_mac) + "'");
  expect_refused(other_mac, 403, "signature does not match");
  Exec("update fleetwave.approvals set token_hash = '" + controller::HashToken(token) + "'");
  // Malformed: refused before any database work.
  expect_refused("not-a-token", 404, "not valid");
  expect_refused(std::string(300, 'a'), 404, "not valid");
  // Expired.
  Exec("update fleetwave.approvals set expires_at = now() - interval '1 second'");
  expect_refused(token, 410, "has expired");
}

TEST_F(HttpServerTest, TheConsolePageIsServedWholeWithoutExternalAssets) {
  auto r = client_->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/html"));
  EXPECT_THAT(r->body, HasSubstr("<title>fleetwave console</title>"));
  EXPECT_THAT(r->body, HasSubstr("/api/v1/status"));
  EXPECT_THAT(r->body, testing::Not(HasSubstr("src=\"http")));
  EXPECT_THAT(r->body, testing::EndsWith("</html>\n"));
}

TEST_F(HttpServerTest, OversizedBodiesAreRefused) {
  controller::HttpOptions o;
  o.admin_token = kAdminToken;
  Start(o);
  auto r = client_->Post((std::string("/api/v1/rollouts/") + kCurrent + "/pause").c_str(),
                         {{"Authorization", std::string("Bearer ") + kAdminToken}},
                         std::string(64 * 1024, 'x'), "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(RolloutState(kCurrent), "running");
}

TEST_F(HttpServerTest, KeepsServingUnderAFloodOfBadRequests) {
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      httplib::Client c("127.0.0.1", server_->port());
      c.set_read_timeout(10, 0);
      for (int i = 0; i < 250; ++i) {
        auto request = [&]() -> httplib::Result {
          switch ((i + t) % 5) {
            case 0:
              return c.Get("/api/v1/rollouts/%%%");
            case 1:
              return c.Get("/approvals/forged");
            case 2:
              return c.Post("/approvals/x/approve", "", "text/plain");
            case 3:
              return c.Get("/api/v1/cycles/-1/events");
            default:
              return c.Get("/nothing/here");
          }
        };
        httplib::Result r = request();
        if (r && r->status >= 400 && r->status < 500) ++answered;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(answered.load(), 1000);
  EXPECT_EQ(Get("/healthz").status, 200);
  EXPECT_EQ(Get("/api/v1/status").status, 200);
}

TEST(HttpServerStartTest, AMalformedOrBusyAddressIsAClearError) {
  controller::HttpOptions o;
  o.address = "localhost";
  controller::HttpServer bad(o);
  try {
    bad.Start();
    FAIL() << "started on a malformed address";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("--http \"localhost\" is invalid: use HOST:PORT"));
  }
  o.address = "127.0.0.1:0";
  controller::HttpServer first(o);
  first.Start();
  o.address = "127.0.0.1:" + std::to_string(first.port());
  controller::HttpServer second(o);
  try {
    second.Start();
    FAIL() << "two servers on one port";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot listen on " + o.address));
  }
}

TEST(ParseHostPortTest, AcceptsHostColonPortOnly) {
  EXPECT_EQ(controller::ParseHostPort("127.0.0.1:8080").port, 8080);
  EXPECT_EQ(controller::ParseHostPort("127.0.0.1:8080").host, "127.0.0.1");
  EXPECT_EQ(controller::ParseHostPort("[::1]:0").host, "::1");
  EXPECT_EQ(controller::ParseHostPort("0.0.0.0:65535").port, 65535);
  for (const char* bad : {"", "8080", ":8080", "host:", "host:x", "host:65536", "host:-1"})
    EXPECT_EQ(controller::ParseHostPort(bad).port, -1) << bad;
}

}  // namespace
