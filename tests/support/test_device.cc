#include "tests/support/test_device.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include <gtest/gtest.h>

namespace testing_support {

std::string BrokerUri() {
  const char* uri = std::getenv("FLEETWAVE_MQTT");
  if (!uri || !*uri)
    throw std::runtime_error("FLEETWAVE_MQTT is not set: run the tests through scripts/test");
  return uri;
}

namespace {
mqtt::ClientOptions DeviceOptions(const std::string& thing, const std::string& root) {
  mqtt::ClientOptions o;
  o.server_uri = BrokerUri();
  // Unique across the test processes ctest runs side by side: a shared id would make the broker
  // disconnect one of them.
  static std::atomic<int> counter{0};
  o.client_id = "dev-" + thing + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  o.subscriptions = {root + "/" + thing + "/jobs/#"};
  return o;
}
}  // namespace

TestDevice::TestDevice(std::string thing, std::string topic_root)
    : thing_(thing),
      base_(topic_root + "/" + thing + "/"),
      client_(DeviceOptions(thing, topic_root)) {
  if (!client_.WaitConnected(std::chrono::seconds(10)))
    throw std::runtime_error("test device could not connect to " + BrokerUri());
}

std::optional<mqtt::Message> TestDevice::Take(const std::string& prefix,
                                              std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    for (auto it = buffer_.begin(); it != buffer_.end(); ++it) {
      if (it->topic.starts_with(prefix)) {
        mqtt::Message m = std::move(*it);
        buffer_.erase(it);
        return m;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    std::vector<mqtt::Message> got;
    client_.Receive(&got, 100, left);
    for (auto& m : got) {
      // The device's own requests come back through its jobs/# subscription: skip them.
      bool answer = m.topic.ends_with("/accepted") || m.topic.ends_with("/rejected") ||
                    m.topic.ends_with("/notify") || m.topic.ends_with("/notify-next");
      if (answer) buffer_.push_back(std::move(m));
    }
  }
}

void TestDevice::Send(const std::string& suffix, const std::string& payload) {
  if (!client_.Publish(Topic(suffix), payload, 1))
    throw std::runtime_error("test device could not publish " + Topic(suffix));
}

nlohmann::json TestDevice::Request(const std::string& suffix, const std::string& payload,
                                   bool* rejected, std::chrono::milliseconds timeout) {
  // With a clientToken, the answer is the one that echoes it (earlier answers stay buffered).
  auto request = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  std::optional<std::string> token;
  if (request.is_object() && request.contains("clientToken") && request["clientToken"].is_string())
    token = request["clientToken"].get<std::string>();
  Send(suffix, payload);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<mqtt::Message> others;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto m = left.count() > 0 ? Take(Topic(suffix) + "/", left) : std::nullopt;
    if (!m) {
      for (auto& o : others) buffer_.push_back(std::move(o));
      throw std::runtime_error("no answer to " + Topic(suffix) + " " + payload.substr(0, 200));
    }
    auto answer = nlohmann::json::parse(m->payload);
    if (!token || (answer.contains("clientToken") && answer["clientToken"] == *token)) {
      for (auto& o : others) buffer_.push_front(std::move(o));
      *rejected = m->topic.ends_with("/rejected");
      return answer;
    }
    others.push_back(std::move(*m));
  }
}

nlohmann::json TestDevice::Accepted(const std::string& suffix, const nlohmann::json& payload) {
  bool rejected = false;
  nlohmann::json answer = Request(suffix, payload.dump(), &rejected);
  EXPECT_FALSE(rejected) << suffix << " " << payload.dump() << " -> " << answer.dump();
  return answer;
}

nlohmann::json TestDevice::Rejected(const std::string& suffix, const std::string& payload) {
  bool rejected = false;
  nlohmann::json answer = Request(suffix, payload, &rejected);
  EXPECT_TRUE(rejected) << suffix << " " << payload.substr(0, 200) << " -> " << answer.dump();
  return answer;
}

std::optional<nlohmann::json> TestDevice::Notice(const std::string& kind,
                                                 std::chrono::milliseconds timeout) {
  // Exact topic: "notify" must not match "notify-next".
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string topic = Topic("jobs/" + kind);
  while (true) {
    for (auto it = buffer_.begin(); it != buffer_.end(); ++it) {
      if (it->topic == topic) {
        auto j = nlohmann::json::parse(it->payload);
        buffer_.erase(it);
        return j;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    // Pull more into the buffer (Take with an impossible prefix only buffers).
    Take("\x01", std::min(left, std::chrono::milliseconds(50)));
  }
}

}  // namespace testing_support
