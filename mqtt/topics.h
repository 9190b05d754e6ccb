// Topic names of the AWS IoT Jobs MQTT API (DESIGN §2) under a configurable root.
//
// For thing T and root R, devices publish requests on R/T/jobs/get, R/T/jobs/start-next,
// R/T/jobs/<jobId>/get and R/T/jobs/<jobId>/update; answers go to <request>/accepted|rejected;
// notices to R/T/jobs/notify-next and R/T/jobs/notify. Health telemetry uses
// <telemetry root>/T/telemetry.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mqtt {

enum class JobsRequest {
  kGetPending,  // R/T/jobs/get
  kStartNext,   // R/T/jobs/start-next
  kDescribe,    // R/T/jobs/<jobId>/get ($next allowed)
  kUpdate,      // R/T/jobs/<jobId>/update
};

struct RequestTopic {
  JobsRequest kind;
  std::string thing;
  std::string job_id;  // empty for kGetPending and kStartNext
};

class JobsTopics {
 public:
  // REQUIRES: `root` and `telemetry_root` are non-empty topic names without wildcards.
  explicit JobsTopics(std::string root = "$aws/things",
                      std::string telemetry_root = "fleetwave/things");

  // The four subscription filters for device requests. Only these: a controller subscribed to
  // R/+/jobs/# would also receive every answer and notice it publishes.
  std::vector<std::string> RequestFilters() const;
  std::string TelemetryFilter() const;

  // Recognises a request topic; nullopt for anything else (including answers and notices).
  std::optional<RequestTopic> ParseRequest(std::string_view topic) const;
  // The thing of a telemetry topic, or nullopt.
  std::optional<std::string> ParseTelemetry(std::string_view topic) const;

  std::string NotifyNext(std::string_view thing) const;
  std::string Notify(std::string_view thing) const;
  std::string Request(const RequestTopic& request) const;
  std::string Telemetry(std::string_view thing) const;
  static std::string Accepted(std::string_view request_topic);
  static std::string Rejected(std::string_view request_topic);

 private:
  std::string root_;
  std::string telemetry_root_;
};

}  // namespace mqtt
