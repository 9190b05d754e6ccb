// Device identity on a real Mosquitto with mutual TLS: the test generates a CA, certificates and
// the broker configuration with the `fleetwave` binary (as an operator would), starts its own
// mosquitto on a free port with that configuration, and connects with mqtt::Client.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "mqtt/client.h"
#include "mqtt/topics.h"
#include "tests/support/eventually.h"
#include "tests/support/process.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using testing::HasSubstr;
using testing_support::FleetwaveBinary;
using testing_support::ProcessResult;
using testing_support::RunProcess;

using testing_support::Eventually;
using testing_support::kDeadline;

using testing_support::FreeLoopbackPort;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The CA, certificates and broker of all tests here, made once; the broker stops at the end.
class TlsBroker {
 public:
  TlsBroker() {
    for (const char* p : {"/usr/sbin/mosquitto", "/usr/bin/mosquitto"})
      if (access(p, X_OK) == 0) binary_ = p;
    if (binary_.empty()) return;
    // Under /tmp, not a private home: started as root, Mosquitto drops to the `mosquitto` user
    // before reading its files, so every parent directory must let that user pass.
    std::string pattern = "/tmp/fwtest-tls-XXXXXX";
    if (!mkdtemp(pattern.data())) return;
    dir_ = pattern;
    std::filesystem::permissions(dir_, std::filesystem::perms(0755));
    port_ = FreeLoopbackPort();
    Run({"ca", "init", "--dir", Path("ca"), "--days", "2"});
    Run({"ca", "init", "--dir", Path("other-ca"), "--name", "an impostor CA"});
    for (const char* id : {"dev-a", "dev-b", "fleetwave-controller"})
      Run({"device", "cert", id, "--ca-dir", Path("ca"), "--out", Path("certs")});
    Run({"device", "cert", "dev-a", "--ca-dir", Path("other-ca"), "--out", Path("other")});
    Run({"broker", "config", "--ca-dir", Path("ca"), "--out", Path("broker"), "--port",
         std::to_string(port_)});
    log_ = Path("mosquitto.log");
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      const std::string conf = Path("broker/mosquitto.conf");
      execl(binary_.c_str(), binary_.c_str(), "-c", conf.c_str(), "-v",
            static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~TlsBroker() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    if (!dir_.empty() && !std::getenv("FLEETWAVE_KEEP_TEST_DIR"))
      std::filesystem::remove_all(dir_, ec);
  }

  bool available() const { return !binary_.empty(); }
  const std::string& setup_error() const { return setup_error_; }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string uri() const { return "ssl://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return ReadAll(log_); }
  bool running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) pid_ = -1;
    return pid_ > 0;
  }

  // Options of a client with identity `id` whose certificate is in `certs` (or none).
  mqtt::ClientOptions Options(const std::string& id, const std::string& certs = "certs") const {
    mqtt::ClientOptions o;
    o.server_uri = uri();
    o.tls_ca_file = Path("ca/ca.crt");
    if (!id.empty()) {
      o.tls_cert_file = Path(certs + "/" + id + ".crt");
      o.tls_key_file = Path(certs + "/" + id + ".key");
    }
    o.connect_timeout = milliseconds(3000);
    return o;
  }

 private:
  void Run(std::vector<std::string> args) {
    args.insert(args.begin(), FleetwaveBinary());
    ProcessResult r = RunProcess(args);
    if (r.exit_code != 0 && setup_error_.empty())
      setup_error_ =
          args[1] + " " + args[2] + " failed (" + std::to_string(r.exit_code) + "): " + r.err;
  }

  std::string binary_;
  std::filesystem::path dir_;
  std::string log_;
  std::string setup_error_;
  int port_ = -1;
  pid_t pid_ = -1;
};

class BrokerTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { broker_ = new TlsBroker; }
  static void TearDownTestSuite() {
    delete broker_;
    broker_ = nullptr;
  }
  void SetUp() override {
    if (!broker_->available())
      GTEST_SKIP() << "no mosquitto binary (scripts/bootstrap installs it)";
    ASSERT_EQ(broker_->setup_error(), "");
    // Up when it accepts a TLS connection of the controller's: a condition with a deadline.
    static bool up = false;
    if (!up) {
      mqtt::Client probe(broker_->Options("fleetwave-controller"));
      up = probe.WaitConnected(kDeadline);
      ASSERT_TRUE(up) << "the broker did not accept TLS connections: " << probe.last_connect_error()
                      << "\nmosquitto log:\n"
                      << broker_->log();
    }
    ASSERT_TRUE(broker_->running()) << broker_->log();
  }

  // Expects `client` never to connect: waits until a connect attempt has failed (Paho told us
  // why), then checks it is still not connected.
  static void ExpectRefused(mqtt::Client& client, const char* what) {
    ASSERT_TRUE(Eventually([&] { return !client.last_connect_error().empty(); }))
        << what << ": no connect attempt failed";
    EXPECT_FALSE(client.connected()) << what;
    std::printf("[ refused  ] %s: %s\n", what, client.last_connect_error().c_str());
  }

  static TlsBroker* broker_;
  const mqtt::JobsTopics topics_;
};

TlsBroker* BrokerTlsTest::broker_ = nullptr;

// Receives until a message on `topic` arrives (returning everything received up to it) or the
// deadline passes.
std::vector<mqtt::Message> ReceiveUntil(mqtt::Client& c, const std::string& topic) {
  std::vector<mqtt::Message> got;
  const auto deadline = Clock::now() + kDeadline;
  while (Clock::now() < deadline) {
    size_t before = got.size();
    c.Receive(&got, 100, milliseconds(100));
    for (size_t i = before; i < got.size(); ++i)
      if (got[i].topic == topic) return got;
  }
  return got;
}

bool HasTopic(const std::vector<mqtt::Message>& messages, const std::string& topic) {
  for (const auto& m : messages)
    if (m.topic == topic) return true;
  return false;
}

TEST_F(BrokerTlsTest, PlainAndAnonymousConnectionsAreRefused) {
  mqtt::ClientOptions plain;
  plain.server_uri = "tcp://127.0.0.1:" + broker_->uri().substr(broker_->uri().rfind(':') + 1);
  plain.connect_timeout = milliseconds(3000);
  mqtt::Client tcp(plain);
  ExpectRefused(tcp, "plain TCP on the TLS port");

  mqtt::Client anonymous(broker_->Options(""));  // TLS, but no client certificate
  ExpectRefused(anonymous, "TLS without a client certificate");
}

TEST_F(BrokerTlsTest, ACertificateFromAnotherCaIsRefused) {
  mqtt::Client impostor(broker_->Options("dev-a", "other"));
  ExpectRefused(impostor, "dev-a with a certificate of another CA");
}

TEST_F(BrokerTlsTest, ADeviceSpeaksOnItsOwnTopicsWithTheController) {
  mqtt::ClientOptions co = broker_->Options("fleetwave-controller");
  co.subscriptions = topics_.RequestFilters();
  co.subscriptions.push_back(topics_.TelemetryFilter());
  mqtt::Client controller(co);
  mqtt::ClientOptions ao = broker_->Options("dev-a");
  ao.subscriptions = {topics_.NotifyNext("dev-a"), "$aws/things/dev-a/jobs/start-next/+"};
  mqtt::Client a(ao);
  ASSERT_TRUE(controller.WaitConnected(kDeadline)) << controller.last_connect_error();
  ASSERT_TRUE(a.WaitConnected(kDeadline)) << a.last_connect_error();

  // A's request reaches the controller, and so does its telemetry.
  const std::string start_next = topics_.Request({mqtt::JobsRequest::kStartNext, "dev-a", ""});
  ASSERT_TRUE(a.Publish(start_next, R"({"clientToken":"a1"})"));
  auto got = ReceiveUntil(controller, start_next);
  ASSERT_TRUE(HasTopic(got, start_next));
  EXPECT_EQ(got.back().payload, R"({"clientToken":"a1"})");
  ASSERT_TRUE(a.Publish(topics_.Telemetry("dev-a"), R"({"firmware":"1.0.0"})", 0));
  EXPECT_TRUE(
      HasTopic(ReceiveUntil(controller, topics_.Telemetry("dev-a")), topics_.Telemetry("dev-a")));

  // The controller answers A and notifies it; A receives both.
  ASSERT_TRUE(controller.Publish(mqtt::JobsTopics::Accepted(start_next), R"({"timestamp":1})"));
  EXPECT_TRUE(HasTopic(ReceiveUntil(a, mqtt::JobsTopics::Accepted(start_next)),
                       mqtt::JobsTopics::Accepted(start_next)));
  ASSERT_TRUE(controller.Publish(topics_.NotifyNext("dev-a"), R"({"timestamp":2})"));
  EXPECT_TRUE(HasTopic(ReceiveUntil(a, topics_.NotifyNext("dev-a")), topics_.NotifyNext("dev-a")));
}

// Mosquitto 2.0.11 grants the SUBACK of a subscription the ACL does not allow (and of `#`), but
// delivers no message the client may not read; it acknowledges a publish the ACL denies and drops
// it. So "nothing arrives" is checked against a marker sent after the forbidden message on the
// same path: when the marker is there, the forbidden message would have been too.
TEST_F(BrokerTlsTest, ADeviceGetsNothingOfAnotherDeviceAndChangesNothing) {
  mqtt::ClientOptions co = broker_->Options("fleetwave-controller");
  co.subscriptions = topics_.RequestFilters();
  mqtt::Client controller(co);
  mqtt::ClientOptions ao = broker_->Options("dev-a");
  ao.subscriptions = {topics_.NotifyNext("dev-b"), "$aws/things/dev-b/jobs/#", "#",
                      topics_.NotifyNext("dev-a")};
  mqtt::Client a(ao);
  ASSERT_TRUE(controller.WaitConnected(kDeadline)) << controller.last_connect_error();
  // Subscribed (the broker granted every filter) or, with a stricter broker, refused: either
  // way it must not receive B's notices.
  const bool subscribed = a.WaitConnected(kDeadline);
  ASSERT_TRUE(a.connected()) << a.last_connect_error();

  // The controller notifies B, then A: A sees its own notice and nothing of B's.
  ASSERT_TRUE(controller.Publish(topics_.NotifyNext("dev-b"), R"({"for":"b"})"));
  ASSERT_TRUE(controller.Publish(topics_.NotifyNext("dev-a"), R"({"for":"a"})"));
  if (subscribed) {
    auto got = ReceiveUntil(a, topics_.NotifyNext("dev-a"));
    ASSERT_TRUE(HasTopic(got, topics_.NotifyNext("dev-a")));
    for (const auto& m : got) EXPECT_EQ(m.topic, topics_.NotifyNext("dev-a")) << m.payload;
  }

  // A publishes on B's request topics (the broker acknowledges and drops them), then on its
  // own: the controller receives A's own request and nothing in B's name.
  const std::string b_start = topics_.Request({mqtt::JobsRequest::kStartNext, "dev-b", ""});
  const std::string b_update = topics_.Request({mqtt::JobsRequest::kUpdate, "dev-b", "job-1"});
  const std::string a_start = topics_.Request({mqtt::JobsRequest::kStartNext, "dev-a", ""});
  ASSERT_TRUE(a.Publish(b_start, R"({"clientToken":"spoof"})"));
  ASSERT_TRUE(a.Publish(b_update, R"({"status":"SUCCEEDED"})"));
  ASSERT_TRUE(a.Publish(topics_.NotifyNext("dev-b"), R"({"fake":"notice"})"));
  ASSERT_TRUE(a.Publish(a_start, R"({"clientToken":"own"})"));
  auto got = ReceiveUntil(controller, a_start);
  ASSERT_TRUE(HasTopic(got, a_start));
  for (const auto& m : got) EXPECT_EQ(m.topic, a_start) << m.payload;
  EXPECT_THAT(broker_->log(), HasSubstr("Denied PUBLISH"));
}

// ---- ClientOptions: TLS settings that cannot work are refused at once ------------------------

TEST(ClientTlsOptions, MisconfigurationIsAnInvalidArgumentNamingTheField) {
  auto message = [](const mqtt::ClientOptions& o) -> std::string {
    try {
      mqtt::Client c(o);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "accepted";
  };
  mqtt::ClientOptions o;
  o.server_uri = "tcp://127.0.0.1:1883";
  o.tls_ca_file = "/etc/hostname";
  EXPECT_THAT(message(o), HasSubstr("tls_ca_file is set but server URI"));
  o.tls_ca_file.clear();
  o.tls_cert_file = "/etc/hostname";
  EXPECT_THAT(message(o), HasSubstr("tls_cert_file"));

  o = mqtt::ClientOptions();
  o.server_uri = "ssl://127.0.0.1:8883";
  EXPECT_THAT(message(o), HasSubstr("tls_ca_file is empty"));
  o.tls_ca_file = "/nonexistent/ca.crt";
  EXPECT_THAT(message(o), HasSubstr("tls_ca_file '/nonexistent/ca.crt' cannot be read"));
  o.tls_ca_file = "/etc/hostname";
  o.tls_cert_file = "/etc/hostname";
  EXPECT_THAT(message(o), HasSubstr("tls_key_file is empty"));
  o.tls_key_file = "/etc/hostname";
  EXPECT_EQ(message(o), "accepted");
}

// ---- The CLI: bad input is exit 2 naming the flag; refusals exit 1 ---------------------------

class SecurityCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "fwtest-pkicli-XXXXXX");
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  ProcessResult Fleetwave(std::vector<std::string> args) {
    args.insert(args.begin(), FleetwaveBinary());
    return RunProcess(args);
  }
  void ExpectUsage(std::vector<std::string> args, const std::string& fragment) {
    ProcessResult r = Fleetwave(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(fragment));
  }
  std::filesystem::path dir_;
};

TEST_F(SecurityCliTest, CaInitWritesAPrivateKeyAndRefusesToOverwriteIt) {
  ProcessResult r = Fleetwave({"ca", "init", "--dir", Path("ca"), "--name", "acme"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::filesystem::status(Path("ca/ca.key")).permissions(), std::filesystem::perms(0600));
  r = Fleetwave({"ca", "init", "--dir", Path("ca")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("already exists"));
  ExpectUsage({"ca", "init", "--dir", Path("x"), "--days", "0"}, "--days 0 is invalid");
  ExpectUsage({"ca", "init", "--dir", Path("y"), "--name", std::string(65, 'n')}, "--name");
  ExpectUsage({"ca", "init"}, "--dir");
}

TEST_F(SecurityCliTest, DeviceCertChecksTheIdentityTheCaAndTheKeyMode) {
  ASSERT_EQ(Fleetwave({"ca", "init", "--dir", Path("ca")}).exit_code, 0);
  ProcessResult r = Fleetwave(
      {"device", "cert", "robot-1", "--ca-dir", Path("ca"), "--out", Path("out"), "--days", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(Path("out/robot-1.crt")));
  EXPECT_EQ(std::filesystem::status(Path("out/robot-1.key")).permissions(),
            std::filesystem::perms(0600));
  for (const char* bad : {"robot/1", "robot+1", "robot#", "$SYS"})
    ExpectUsage({"device", "cert", bad, "--ca-dir", Path("ca"), "--out", Path("out")}, "device id");
  ExpectUsage({"device", "cert", "r", "--ca-dir", Path("none"), "--out", Path("out")}, "--ca-dir");
  ExpectUsage({"device", "cert", "r", "--ca-dir", Path("ca"), "--out", Path("out"), "--days", "-1"},
              "--days");
  r = Fleetwave({"device", "cert", "robot-1", "--ca-dir", Path("ca"), "--out", Path("out")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("already exists"));

  std::filesystem::permissions(Path("ca/ca.key"), std::filesystem::perms(0644));
  r = Fleetwave({"device", "cert", "robot-2", "--ca-dir", Path("ca"), "--out", Path("out")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("chmod 600 " + Path("ca/ca.key")));
  EXPECT_FALSE(std::filesystem::exists(Path("out/robot-2.key")));
}

TEST_F(SecurityCliTest, BrokerConfigChecksEveryFlag) {
  ASSERT_EQ(Fleetwave({"ca", "init", "--dir", Path("ca")}).exit_code, 0);
  const std::vector<std::string> base = {"broker",   "config", "--ca-dir",
                                         Path("ca"), "--out",  Path("b")};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> args = base;
    args.insert(args.end(), more.begin(), more.end());
    return args;
  };
  ExpectUsage(base, "--port");  // required
  ExpectUsage(with({"--port", "0"}), "--port 0 is invalid");
  ExpectUsage(with({"--port", "70000"}), "--port");
  ExpectUsage(with({"--port", "8883", "--jobs-root", "a/+/b"}), "--jobs-root");
  ExpectUsage(with({"--port", "8883", "--telemetry-root", "t/#"}), "--telemetry-root");
  ExpectUsage(with({"--port", "8883", "--controller-identity", "ctl/1"}), "--controller-identity");
  ExpectUsage(with({"--port", "8883", "--simulator-identity", "sim#"}), "--simulator-identity");
  ExpectUsage(with({"--port", "8883", "--simulator-identity", "fleetwave-controller"}),
              "must differ");
  ExpectUsage(with({"--port", "8883", "--name", "bad name"}), "--name");
  ExpectUsage(with({"--port", "8883", "--bind", "1.2.3.4 5"}), "--bind");
  ExpectUsage(with({"--port", "8883", "--broker-user", "no-such-user-here"}), "--broker-user");
  ExpectUsage({"broker", "config", "--ca-dir", Path("none"), "--out", Path("b"), "--port", "1"},
              "--ca-dir");

  ProcessResult r = Fleetwave(with({"--port", "8883", "--simulator-identity", "fleetwave-simulator",
                                    "--jobs-root", "fleet/jobs"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(ReadAll(Path("b/acl")), HasSubstr("user fleetwave-simulator\n"));
  EXPECT_THAT(ReadAll(Path("b/acl")), HasSubstr("pattern read fleet/jobs/%u/jobs/notify-next\n"));
  EXPECT_THAT(ReadAll(Path("b/mosquitto.conf")), HasSubstr("require_certificate true\n"));
  // Run again: configuration is rewritten, the broker certificate kept.
  const std::string cert = ReadAll(Path("b/broker.crt"));
  r = Fleetwave(with({"--port", "8884"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("(kept)"));
  EXPECT_EQ(ReadAll(Path("b/broker.crt")), cert);
  EXPECT_THAT(ReadAll(Path("b/mosquitto.conf")), HasSubstr("listener 8884 127.0.0.1\n"));
  EXPECT_THAT(ReadAll(Path("b/acl")), testing::Not(HasSubstr("fleetwave-simulator")));
}

}  // namespace
