// mqtt::Client against a real Mosquitto: the one scripts/stack starts (FLEETWAVE_MQTT), and for
// the broker-restart test a private one this test starts itself.
#include "mqtt/client.h"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "tests/support/eventually.h"
#include "tests/support/process.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace mqtt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

using testing_support::Eventually;
using testing_support::kDeadline;

// Receives until `n` messages arrived or `timeout` passed.
std::vector<Message> ReceiveN(Client& c, size_t n, milliseconds timeout = kDeadline) {
  std::vector<Message> out;
  const auto deadline = Clock::now() + timeout;
  while (out.size() < n) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    c.Receive(&out, n - out.size(), left);
  }
  return out;
}

milliseconds Since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

std::string TestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

// Every test uses its own topics and client ids, so test processes can run in parallel against
// one broker.
std::string Unique() { return std::to_string(getpid()) + "-" + TestName(); }

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* uri = std::getenv("FLEETWAVE_MQTT");
    ASSERT_TRUE(uri != nullptr && *uri != '\0')
        << "FLEETWAVE_MQTT is not set. These tests need a running Mosquitto: run\n"
           "  scripts/stack up && eval \"$(scripts/stack env)\"\n"
           "(or scripts/test, which does it for you) and try again.";
    uri_ = uri;
    prefix_ = "fwtest/" + Unique();
  }

  ClientOptions Options(std::vector<std::string> subscriptions = {}) {
    ClientOptions o;
    o.server_uri = uri_;
    o.subscriptions = std::move(subscriptions);
    return o;
  }

  std::string uri_;
  std::string prefix_;
};

TEST_F(ClientTest, RoundTripQos1) {
  Client sub(Options({prefix_ + "/#"}));
  Client pub(Options());
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));
  EXPECT_TRUE(pub.connected());

  ASSERT_TRUE(pub.Publish(prefix_ + "/a", "hello", 1, seconds(5)));
  ASSERT_TRUE(pub.Flush(seconds(5)));
  auto got = ReceiveN(sub, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].topic, prefix_ + "/a");
  EXPECT_EQ(got[0].payload, "hello");
  EXPECT_EQ(got[0].qos, 1);

  ClientStats ps = pub.stats();
  EXPECT_EQ(ps.published, 1u);
  EXPECT_EQ(ps.publish_failures, 0u);
  EXPECT_EQ(ps.inflight, 0u);
  EXPECT_EQ(ps.connects, 1u);
  ClientStats ss = sub.stats();
  EXPECT_EQ(ss.received, 1u);
  EXPECT_EQ(ss.inbound, 0u);

  // QoS 0 counts as published once handed over.
  ASSERT_TRUE(pub.Publish(prefix_ + "/b", "fire and forget", 0, seconds(5)));
  EXPECT_EQ(pub.stats().published, 2u);
  got = ReceiveN(sub, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "fire and forget");
  EXPECT_EQ(got[0].qos, 0);
}

TEST_F(ClientTest, KeepsOneClientsOrder) {
  Client sub(Options({prefix_ + "/#"}));
  Client pub(Options());
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));

  constexpr int kCount = 3000;
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(pub.Publish(prefix_ + "/t" + std::to_string(i % 7), std::to_string(i)));
  }
  auto got = ReceiveN(sub, kCount);
  ASSERT_EQ(got.size(), size_t{kCount});
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(got[i].payload, std::to_string(i)) << "at " << i;
  }
  EXPECT_TRUE(pub.Flush(seconds(5)));
  EXPECT_EQ(pub.stats().published, uint64_t{kCount});
}

TEST_F(ClientTest, InflightNeverExceedsWindow) {
  Client sub(Options({prefix_ + "/#"}));
  ClientOptions po = Options();
  po.max_inflight = 4;
  Client pub(po);
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));

  std::atomic<bool> done{false};
  size_t max_sampled = 0;  // by the sampler thread
  uint64_t samples = 0;
  std::thread sampler([&] {
    while (!done.load()) {
      max_sampled = std::max(max_sampled, pub.stats().inflight);
      ++samples;
    }
  });
  constexpr int kCount = 2000;
  bool all_published = true;
  size_t max_seen = 0;  // by the publishing thread, right after each publish
  for (int i = 0; i < kCount && all_published; ++i) {
    all_published = pub.Publish(prefix_ + "/w", std::to_string(i), 1, seconds(10));
    max_seen = std::max(max_seen, pub.stats().inflight);
  }
  EXPECT_TRUE(pub.Flush(seconds(10)));
  done = true;
  sampler.join();
  max_seen = std::max(max_seen, max_sampled);

  ASSERT_TRUE(all_published);
  EXPECT_LE(max_seen, 4u) << "over " << samples << " samples";
  EXPECT_GE(max_seen, 1u);
  ClientStats ps = pub.stats();
  EXPECT_EQ(ps.published, uint64_t{kCount});
  EXPECT_EQ(ps.publish_failures, 0u);
  EXPECT_EQ(ps.inflight, 0u);

  auto got = ReceiveN(sub, kCount);
  ASSERT_EQ(got.size(), size_t{kCount});
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(got[i].payload, std::to_string(i));
}

TEST_F(ClientTest, PersistentSessionKeepsMessagesWhileAway) {
  ClientOptions so = Options({prefix_ + "/#"});
  so.client_id = "fwtest-" + Unique();
  so.clean_session = false;
  {
    Client sub(so);
    ASSERT_TRUE(sub.WaitConnected(kDeadline));  // subscribed: the broker keeps the session
  }

  constexpr int kCount = 200;
  {
    Client pub(Options());
    ASSERT_TRUE(pub.WaitConnected(kDeadline));
    for (int i = 0; i < kCount; ++i) ASSERT_TRUE(pub.Publish(prefix_ + "/away", std::to_string(i)));
    ASSERT_TRUE(pub.Flush(kDeadline));
    EXPECT_EQ(pub.stats().published, uint64_t{kCount});
  }

  {
    Client sub(so);
    auto got = ReceiveN(sub, kCount);
    ASSERT_EQ(got.size(), size_t{kCount});
    for (int i = 0; i < kCount; ++i) ASSERT_EQ(got[i].payload, std::to_string(i));
    EXPECT_TRUE(sub.WaitConnected(kDeadline));
  }

  // Leave no session behind on the broker: a clean connect under the same id discards it.
  so.clean_session = true;
  so.subscriptions.clear();
  Client cleaner(so);
  EXPECT_TRUE(cleaner.WaitConnected(kDeadline));
}

// The broker drops a client when another connects with the same id. With a clean session the
// first one's subscriptions die with the connection: it must reconnect and subscribe again.
TEST_F(ClientTest, ReconnectsAndResubscribesAfterTakeover) {
  ClientOptions ao = Options({prefix_ + "/#"});
  ao.client_id = "fwtest-" + Unique();
  Client a(ao);
  Client pub(Options());
  ASSERT_TRUE(a.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.Publish(prefix_ + "/x", "before"));
  auto got = ReceiveN(a, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "before");
  EXPECT_EQ(a.stats().connects, 1u);

  {
    ClientOptions bo = Options();
    bo.client_id = ao.client_id;
    Client b(bo);
    ASSERT_TRUE(b.WaitConnected(kDeadline));
    // a was thrown out and has come back (throwing b out in turn).
    ASSERT_TRUE(Eventually([&] { return a.stats().connects >= 2; }));
  }

  // Messages sent while a is between connections are lost (clean session), so probe until one
  // arrives: it proves a is connected and subscribed again.
  bool received = false;
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; !received && Clock::now() < deadline; ++i) {
    ASSERT_TRUE(pub.Publish(prefix_ + "/x", "probe " + std::to_string(i)));
    std::vector<Message> probe;
    if (a.Receive(&probe, 100, milliseconds(200)) > 0) {
      received = probe.back().payload.starts_with("probe ");
    }
  }
  EXPECT_TRUE(received) << "no message after the takeover; connects=" << a.stats().connects;
  EXPECT_TRUE(a.WaitConnected(kDeadline));
  EXPECT_GE(a.stats().connects, 2u);
}

// A persistent session's backlog meets a small inbound queue: the queue holds at its bound until
// Receive() makes room, and nothing is lost or reordered.
TEST_F(ClientTest, InboundBackpressureLosesNothing) {
  ClientOptions so = Options({prefix_ + "/#"});
  so.client_id = "fwtest-" + Unique();
  so.clean_session = false;
  {
    Client sub(so);
    ASSERT_TRUE(sub.WaitConnected(kDeadline));
  }
  constexpr int kCount = 3000;
  {
    Client pub(Options());
    ASSERT_TRUE(pub.WaitConnected(kDeadline));
    for (int i = 0; i < kCount; ++i) ASSERT_TRUE(pub.Publish(prefix_ + "/bp", std::to_string(i)));
    ASSERT_TRUE(pub.Flush(kDeadline));
  }

  so.max_inbound = 8;
  {
    Client sub(so);
    // Nobody receives yet: the queue fills to its bound and stays there (Paho is held).
    ASSERT_TRUE(Eventually([&] { return sub.stats().inbound == 8; }));
    EXPECT_EQ(sub.stats().received, 8u);

    std::vector<Message> got;
    size_t max_inbound_seen = 0;
    const auto deadline = Clock::now() + kDeadline;
    while (got.size() < size_t{kCount} && Clock::now() < deadline) {
      max_inbound_seen = std::max(max_inbound_seen, sub.stats().inbound);
      sub.Receive(&got, 3, milliseconds(200));  // small batches: the queue keeps hitting its bound
    }
    ASSERT_EQ(got.size(), size_t{kCount});
    for (int i = 0; i < kCount; ++i) ASSERT_EQ(got[i].payload, std::to_string(i));
    EXPECT_LE(max_inbound_seen, 8u);
    EXPECT_EQ(sub.stats().received, uint64_t{kCount});
  }

  so.clean_session = true;  // leave no session behind
  so.subscriptions.clear();
  Client cleaner(so);
  EXPECT_TRUE(cleaner.WaitConnected(kDeadline));
}

// The same with the publisher in this process, publishing while the queue is full: it waits for
// Receive() to make room (Paho is held meanwhile), and again nothing is lost or reordered.
TEST_F(ClientTest, InboundBackpressureWithPublisherInProcess) {
  ClientOptions so = Options({prefix_ + "/#"});
  so.max_inbound = 8;
  Client sub(so);
  Client pub(Options());
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));

  constexpr int kCount = 3000;
  std::atomic<int> sent{0};
  std::thread publisher([&] {
    for (int i = 0; i < kCount; ++i) {
      if (!pub.Publish(prefix_ + "/bp", std::to_string(i), 1, kDeadline)) return;
      ++sent;
    }
  });
  ASSERT_TRUE(Eventually([&] { return sub.stats().inbound >= 8; }));

  std::vector<Message> got;
  size_t max_inbound_seen = 0;
  const auto deadline = Clock::now() + kDeadline;
  while (got.size() < size_t{kCount} && Clock::now() < deadline) {
    max_inbound_seen = std::max(max_inbound_seen, sub.stats().inbound);
    sub.Receive(&got, 3, milliseconds(200));
  }
  publisher.join();
  ASSERT_EQ(sent.load(), kCount);
  ASSERT_EQ(got.size(), size_t{kCount});
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(got[i].payload, std::to_string(i));
  // The bound yields a little to a publish already inside Paho (see PahoGate in client.cc).
  EXPECT_LT(max_inbound_seen, size_t{kCount} / 10);
  RecordProperty("max_inbound_seen", std::to_string(max_inbound_seen));
}

// Paho C delivers the messages of every client on one thread holding its global mutex, so a full
// inbound queue stalls all of Paho in the process (client.h). Publish on ANOTHER Client must then
// still honour its timeout (not hang inside Paho), and everything resumes once drained.
TEST_F(ClientTest, FullInboundQueueStallsOtherClientsButPublishKeepsItsTimeout) {
  ClientOptions so = Options({prefix_ + "/in/#"});
  so.max_inbound = 1;
  Client sub(so);
  Client pub(Options());
  Client other(Options());
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));
  ASSERT_TRUE(other.WaitConnected(kDeadline));

  // The first message fills the queue, the next one blocks Paho's receive thread in the callback
  // (unless a Paho call of ours is under way just then: that message goes over the bound, and
  // the loop below sends another).
  ASSERT_TRUE(pub.Publish(prefix_ + "/in/x", "0"));
  int sent = 1;

  // Once stalled, Publish on another Client cannot get through Paho; it must come back on time
  // instead of hanging inside Paho.
  bool stalled = false;
  milliseconds failed_after{0};
  const auto deadline = Clock::now() + kDeadline;
  while (!stalled && Clock::now() < deadline) {
    if (sub.stats().inbound >= size_t(sent)) {  // everything sent is queued: nothing blocks yet
      ASSERT_TRUE(pub.Publish(prefix_ + "/in/x", std::to_string(sent++), 1, seconds(5)));
    }
    auto t0 = Clock::now();
    stalled = !other.Publish(prefix_ + "/elsewhere", "x", 1, milliseconds(300));
    failed_after = Since(t0);
  }
  ASSERT_TRUE(stalled) << "expected Paho to be stalled by the full queue of another client";
  EXPECT_GE(failed_after, milliseconds(300));
  EXPECT_LT(failed_after, seconds(3));

  auto start = Clock::now();
  std::thread stopper([&] { other.Stop(); });
  EXPECT_FALSE(other.Publish(prefix_ + "/elsewhere", "x", 1, seconds(60)));
  stopper.join();
  EXPECT_LT(Since(start), seconds(5));

  auto got = ReceiveN(sub, sent);  // drained: Paho moves again
  ASSERT_EQ(got.size(), size_t(sent));
  for (int i = 0; i < sent; ++i) EXPECT_EQ(got[i].payload, std::to_string(i));
  EXPECT_TRUE(pub.Publish(prefix_ + "/elsewhere", "x", 1, kDeadline));
  EXPECT_TRUE(pub.Flush(kDeadline));
}

TEST_F(ClientTest, AFullInboundQueueDropsQos0MessagesInsteadOfStalling) {
  ClientOptions so = Options({prefix_ + "/in/#"});
  so.max_inbound = 2;
  Client sub(so);
  Client pub(Options());
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));

  for (int i = 0; i < 10; ++i) ASSERT_TRUE(pub.Publish(prefix_ + "/in/t", std::to_string(i), 0));
  // A QoS 1 message behind them still arrives: Paho was never held.
  ASSERT_TRUE(pub.Publish(prefix_ + "/in/r", "request", 1, kDeadline));
  Eventually([&] { return sub.stats().dropped >= 8; });
  EXPECT_EQ(sub.stats().dropped, 8u);
  auto got = ReceiveN(sub, 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].payload, "0");
  EXPECT_EQ(got[1].payload, "1");
  EXPECT_EQ(got[2].payload, "request");
  // Paho moves on: another client publishes at once.
  EXPECT_TRUE(pub.Publish(prefix_ + "/elsewhere", "x", 1, kDeadline));
}

// The controller's requests connection: its drainer waits on its own publisher, whose PUBACKs
// a held receive thread would not read. Full, it drops QoS 1 messages too, and holds nothing.
TEST_F(ClientTest, WithDropWhenFullAFullQueueDropsQos1MessagesAndHoldsNothing) {
  ClientOptions so = Options({prefix_ + "/in/#"});
  so.max_inbound = 2;
  so.drop_when_full = true;
  Client sub(so);
  Client pub(Options());
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));

  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(pub.Publish(prefix_ + "/in/r", std::to_string(i), 1, kDeadline));
  // Every PUBACK was read while the queue was full (a held receive thread reads none).
  ASSERT_TRUE(pub.Flush(kDeadline));
  EXPECT_EQ(pub.stats().published, 10u);
  Eventually([&] { return sub.stats().dropped >= 8; });
  EXPECT_EQ(sub.stats().dropped, 8u);
  auto got = ReceiveN(sub, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].payload, "0");
  EXPECT_EQ(got[1].payload, "1");
  // Drained, it takes messages again.
  ASSERT_TRUE(pub.Publish(prefix_ + "/in/r", "after", 1, kDeadline));
  got = ReceiveN(sub, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "after");
  EXPECT_EQ(sub.stats().dropped, 8u);
}

TEST_F(ClientTest, StopUnblocksWaitingReceive) {
  Client sub(Options({prefix_ + "/#"}));
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  size_t n = 99;
  auto start = Clock::now();
  std::thread receiver([&] {
    std::vector<Message> out;
    n = sub.Receive(&out, 10, seconds(60));
  });
  sub.Stop();
  receiver.join();
  EXPECT_EQ(n, 0u);
  EXPECT_LT(Since(start), seconds(5));
  sub.Stop();  // idempotent

  // Future calls return at once too.
  std::vector<Message> out;
  start = Clock::now();
  EXPECT_EQ(sub.Receive(&out, 10, seconds(60)), 0u);
  EXPECT_FALSE(sub.Publish(prefix_ + "/late", "x", 1, seconds(60)));
  EXPECT_LT(Since(start), seconds(5));
}

// Single-connection QoS 1 publish rate (DESIGN §2 expects Paho around 17k msg/s here).
TEST_F(ClientTest, PublishRate) {
  ClientOptions po = Options();
  po.max_inflight = 1000;
  Client pub(po);
  ASSERT_TRUE(pub.WaitConnected(kDeadline));
  constexpr int kCount = 20000;
  const std::string topic = prefix_ + "/rate";
  const std::string payload(100, 'x');
  auto start = Clock::now();
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(pub.Publish(topic, payload));
  ASSERT_TRUE(pub.Flush(kDeadline));
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(pub.stats().published, uint64_t{kCount});
  char line[160];
  std::snprintf(line, sizeof line,
                "QoS 1 publish rate, one connection, window 1000: %d msgs in "
                "%.3f s = %.0f msgs/s",
                kCount, secs, kCount / secs);
  std::cout << line << std::endl;
  RecordProperty("msgs_per_second", std::to_string(static_cast<int>(kCount / secs)));
}

// ------------------------------------------------------------------------ no broker needed

TEST(ClientOffline, RejectsBadOptions) {
  ClientOptions o;
  o.server_uri = "not a uri";
  EXPECT_THROW(Client c(o), std::invalid_argument);
  o.server_uri = "http://127.0.0.1:1883";
  EXPECT_THROW(Client c(o), std::invalid_argument);
  o.server_uri = "tcp://";
  EXPECT_THROW(Client c(o), std::invalid_argument);
  o.server_uri = "tcp://127.0.0.1:1";
  o.clean_session = false;  // a persistent session needs a name
  EXPECT_THROW(Client c(o), std::invalid_argument);
  o.clean_session = true;
  o.max_inflight = 0;
  EXPECT_THROW(Client c(o), std::invalid_argument);
}

TEST(ClientOffline, PublishTimesOutWithoutBrokerAndDestructorIsPrompt) {
  auto start = Clock::now();
  {
    ClientOptions o;
    o.server_uri = "tcp://127.0.0.1:1";  // nothing listens there
    o.subscriptions = {"fwtest/unreachable/#"};
    Client c(o);
    EXPECT_FALSE(c.WaitConnected(milliseconds(200)));
    EXPECT_FALSE(c.connected());
    auto t0 = Clock::now();
    EXPECT_FALSE(c.Publish("fwtest/unreachable/x", "payload", 1, milliseconds(300)));
    EXPECT_GE(Since(t0), milliseconds(300));
    EXPECT_LT(Since(t0), seconds(3));
    EXPECT_FALSE(c.Publish("fwtest/unreachable/x", "payload", 0, milliseconds(100)));
    ClientStats s = c.stats();
    EXPECT_EQ(s.published, 0u);
    EXPECT_EQ(s.inflight, 0u);
    EXPECT_EQ(s.connects, 0u);
    EXPECT_TRUE(c.Flush(milliseconds(10)));  // nothing in flight
    start = Clock::now();
  }
  EXPECT_LT(Since(start), seconds(2)) << "destructor took too long";
}

TEST(ClientOffline, StopUnblocksWaitingPublish) {
  ClientOptions o;
  o.server_uri = "tcp://127.0.0.1:1";
  Client c(o);
  bool ok = true;
  auto start = Clock::now();
  std::thread publisher([&] { ok = c.Publish("fwtest/stop/x", "payload", 1, seconds(60)); });
  c.Stop();
  publisher.join();
  EXPECT_FALSE(ok);
  EXPECT_LT(Since(start), seconds(5));
}

// ------------------------------------------------------------------------ private broker

// A Mosquitto of our own on a free port, to start before the client and to restart under it.
class PrivateBroker {
 public:
  PrivateBroker() {
    for (const char* p : {"/usr/sbin/mosquitto", "/usr/bin/mosquitto"}) {
      if (access(p, X_OK) == 0) binary_ = p;
    }
    port_ = testing_support::FreeLoopbackPort();
    dir_ = std::filesystem::temp_directory_path() / ("fwtest-mosquitto-" + Unique());
    std::filesystem::create_directories(dir_);
    std::filesystem::permissions(dir_, std::filesystem::perms(0755));
    conf_ = (dir_ / "mosquitto.conf").string();
    std::ofstream(conf_) << "listener " << port_ << " 127.0.0.1\nallow_anonymous true\n"
                         << "persistence false\nlog_dest none\n";
    std::filesystem::permissions(conf_, std::filesystem::perms(0644));
  }
  ~PrivateBroker() {
    Kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool available() const { return !binary_.empty() && port_ > 0; }
  std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

  void Start() {
    pid_ = fork();
    if (pid_ == 0) {
      execl(binary_.c_str(), binary_.c_str(), "-c", conf_.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::string binary_;
  int port_ = -1;
  std::filesystem::path dir_;
  std::string conf_;
  pid_t pid_ = -1;
};

bool RoundTrip(Client& pub, Client& sub, const std::string& topic, const std::string& payload) {
  const auto deadline = Clock::now() + kDeadline;
  while (Clock::now() < deadline) {
    if (!pub.Publish(topic, payload, 1, kDeadline)) return false;
    std::vector<Message> got;
    if (sub.Receive(&got, 100, milliseconds(200)) > 0 && got.back().payload == payload) {
      return true;
    }
  }
  return false;
}

// The broker is not up when the clients start, and goes away and comes back later: both
// clients connect once it is there, and reconnect and resubscribe after the restart.
TEST(ClientPrivateBroker, ConnectsLateAndSurvivesBrokerRestart) {
  PrivateBroker broker;
  if (!broker.available()) GTEST_SKIP() << "no mosquitto binary";
  ClientOptions so;
  so.server_uri = broker.uri();
  so.subscriptions = {"fwtest/restart/#"};
  so.keep_alive_seconds = 2;
  ClientOptions po = so;
  po.subscriptions.clear();
  Client sub(so);
  Client pub(po);
  EXPECT_FALSE(sub.WaitConnected(milliseconds(300)));

  broker.Start();
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(pub.WaitConnected(kDeadline));
  ASSERT_TRUE(RoundTrip(pub, sub, "fwtest/restart/a", "first"));

  broker.Kill();
  ASSERT_TRUE(Eventually([&] { return !sub.connected() && !pub.connected(); }));
  // A publish waits for the reconnect, within its timeout.
  std::atomic<bool> late_ok{false};
  std::thread late([&] { late_ok = pub.Publish("fwtest/restart/a", "late", 1, kDeadline); });
  broker.Start();
  late.join();
  EXPECT_TRUE(late_ok.load());
  ASSERT_TRUE(sub.WaitConnected(kDeadline));
  ASSERT_TRUE(RoundTrip(pub, sub, "fwtest/restart/a", "second"));
  EXPECT_GE(sub.stats().connects, 2u);
  EXPECT_GE(pub.stats().connects, 2u);
}

}  // namespace
}  // namespace mqtt
