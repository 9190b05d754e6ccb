#include "mqtt/topics.h"

namespace mqtt {
namespace {

// A topic level that names a thing or a job: non-empty and free of wildcards.
bool IsLevel(std::string_view s) {
  return !s.empty() && s.find_first_of("/+#") == std::string_view::npos;
}

// Strips `prefix` + '/' from `topic`; nullopt when it does not start with it.
std::optional<std::string_view> After(std::string_view topic, std::string_view prefix) {
  if (topic.size() <= prefix.size() + 1 || !topic.starts_with(prefix) ||
      topic[prefix.size()] != '/') {
    return std::nullopt;
  }
  return topic.substr(prefix.size() + 1);
}

}  // namespace

JobsTopics::JobsTopics(std::string root, std::string telemetry_root)
    : root_(std::move(root)), telemetry_root_(std::move(telemetry_root)) {}

std::vector<std::string> JobsTopics::RequestFilters() const {
  return {root_ + "/+/jobs/get", root_ + "/+/jobs/start-next", root_ + "/+/jobs/+/get",
          root_ + "/+/jobs/+/update"};
}

std::string JobsTopics::TelemetryFilter() const { return telemetry_root_ + "/+/telemetry"; }

std::optional<RequestTopic> JobsTopics::ParseRequest(std::string_view topic) const {
  auto rest = After(topic, root_);
  if (!rest) return std::nullopt;
  size_t slash = rest->find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view thing = rest->substr(0, slash);
  auto tail = After(rest->substr(slash), "");  // drop the '/'
  if (!IsLevel(thing) || !tail || !tail->starts_with("jobs/")) return std::nullopt;
  std::string_view jobs = tail->substr(5);
  if (jobs == "get") return RequestTopic{JobsRequest::kGetPending, std::string(thing), ""};
  if (jobs == "start-next") return RequestTopic{JobsRequest::kStartNext, std::string(thing), ""};
  size_t job_end = jobs.find('/');
  if (job_end == std::string_view::npos) return std::nullopt;
  std::string_view job = jobs.substr(0, job_end);
  std::string_view verb = jobs.substr(job_end + 1);
  if (!IsLevel(job)) return std::nullopt;
  if (verb == "get")
    return RequestTopic{JobsRequest::kDescribe, std::string(thing), std::string(job)};
  if (verb == "update")
    return RequestTopic{JobsRequest::kUpdate, std::string(thing), std::string(job)};
  return std::nullopt;
}

std::optional<std::string> JobsTopics::ParseTelemetry(std::string_view topic) const {
  auto rest = After(topic, telemetry_root_);
  if (!rest || !rest->ends_with("/telemetry")) return std::nullopt;
  std::string_view thing = rest->substr(0, rest->size() - 10);
  if (!IsLevel(thing)) return std::nullopt;
  return std::string(thing);
}

std::string JobsTopics::NotifyNext(std::string_view thing) const {
  return root_ + "/" + std::string(thing) + "/jobs/notify-next";
}

std::string JobsTopics::Notify(std::string_view thing) const {
  return root_ + "/" + std::string(thing) + "/jobs/notify";
}

std::string JobsTopics::Request(const RequestTopic& r) const {
  std::string base = root_ + "/" + r.thing + "/jobs/";
  switch (r.kind) {
    case JobsRequest::kGetPending:
      return base + "get";
    case JobsRequest::kStartNext:
      return base + "start-next";
    case JobsRequest::kDescribe:
      return base + r.job_id + "/get";
    case JobsRequest::kUpdate:
      return base + r.job_id + "/update";
  }
  return base;
}

std::string JobsTopics::Telemetry(std::string_view thing) const {
  return telemetry_root_ + "/" + std::string(thing) + "/telemetry";
}

std::string JobsTopics::Accepted(std::string_view request_topic) {
  return std::string(request_topic) + "/accepted";
}

std::string JobsTopics::Rejected(std::string_view request_topic) {
  return std::string(request_topic) + "/rejected";
}

}  // namespace mqtt
