// The JSON of the AWS IoT Jobs MQTT API (DESIGN §2): parsing device requests (untrusted: size
// capped, schema checked, every problem a rejection with its code) and encoding answers and
// notices. Field names are AWS's; times are epoch seconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json_fwd.hpp>

#include "fleet/jobs.h"
#include "mqtt/topics.h"

namespace mqtt {

inline constexpr size_t kMaxPayloadBytes = 128 * 1024;

struct GetPendingBody {};
using RequestBody = std::variant<GetPendingBody, fleet::StartNextRequest, fleet::DescribeRequest,
                                 fleet::UpdateRequest>;

struct JobsRequestMessage {
  RequestTopic topic;
  std::string topic_name;                     // the request topic, answered on /accepted|/rejected
  std::optional<std::string> client_token;    // echoed in the answer when it could be read
  std::optional<fleet::Rejection> rejection;  // malformed: answer this and touch nothing
  RequestBody body;
};

// Parses a request received on `topic_name` (already recognised as `topic`).
JobsRequestMessage ParseJobsRequest(const RequestTopic& topic, std::string topic_name,
                                    std::string_view payload);

// The answer to `request`: the topic (request + /accepted or /rejected) and payload.
struct Answer {
  std::string topic;
  std::string payload;
};
// Applied to every job document an answer or notice carries (a JSON object), just before it is
// encoded: the controller signs notices here (controller/notice_signer.h). Empty: as stored.
using DocumentSigner = std::function<void(nlohmann::json& document)>;

Answer EncodeAnswer(const JobsRequestMessage& request, const fleet::Outcome& outcome, int64_t now,
                    const DocumentSigner& sign = {});
Answer EncodeRejection(const JobsRequestMessage& request, const fleet::Rejection& rejection,
                       int64_t now);

// notify-next: {"timestamp", "execution"} or {"timestamp"} when nothing is pending.
std::string EncodeNotifyNext(const fleet::Execution* next, int64_t now,
                             const DocumentSigner& sign = {});
// notify: {"timestamp", "jobs": {"QUEUED": [...], "IN_PROGRESS": [...]}} (empty lists omitted).
std::string EncodeNotify(const fleet::ThingJobs& jobs, int64_t now);

// Health telemetry: a JSON object, at most kMaxPayloadBytes. Returns nullopt and sets `error`
// otherwise. `firmware` receives the "firmware" field when it is a string.
struct Telemetry {
  std::string thing;
  std::string payload;  // the object, re-serialised compactly (unknown fields kept)
  std::optional<std::string> firmware;
};
std::optional<Telemetry> ParseTelemetry(std::string thing, std::string_view payload,
                                        std::string* error);

}  // namespace mqtt
