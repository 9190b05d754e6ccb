// A device for tests: speaks the jobs API over a real MQTT connection, as an SDK jobs client
// does, and waits for answers and notices with deadlines (never sleeps).
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "mqtt/client.h"

namespace testing_support {

// Requires FLEETWAVE_MQTT (scripts/test sets it).
std::string BrokerUri();

class TestDevice {
 public:
  TestDevice(std::string thing, std::string topic_root);

  // Publishes `payload` (raw text) on <root>/<thing>/<suffix> and returns the answer that
  // arrives on .../accepted or .../rejected, with `*rejected` telling which.
  // Throws std::runtime_error when no answer arrives within `timeout`.
  nlohmann::json Request(const std::string& suffix, const std::string& payload, bool* rejected,
                         std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // Expects an accepted answer (fails the test otherwise) and returns it.
  nlohmann::json Accepted(const std::string& suffix, const nlohmann::json& payload);
  // Expects a rejection and returns it.
  nlohmann::json Rejected(const std::string& suffix, const std::string& payload);
  // Publishes without waiting for an answer.
  void Send(const std::string& suffix, const std::string& payload);

  // The next notice on <root>/<thing>/jobs/<kind> ("notify-next" or "notify"), or nullopt.
  std::optional<nlohmann::json> Notice(
      const std::string& kind, std::chrono::milliseconds timeout = std::chrono::seconds(15));

  const std::string& thing() const { return thing_; }
  std::string Topic(const std::string& suffix) const { return base_ + suffix; }

 private:
  std::optional<mqtt::Message> Take(const std::string& topic_prefix,
                                    std::chrono::milliseconds timeout);

  std::string thing_;
  std::string base_;  // <root>/<thing>/
  mqtt::Client client_;
  std::deque<mqtt::Message> buffer_;
};

}  // namespace testing_support
