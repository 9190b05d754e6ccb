#include "fleet/plan.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace fleet {
namespace {

constexpr const char* kIssueExample = R"({
  "waves": [{"percent": 1, "minDevices": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
  "successThresholdPercent": 95,
  "abort": [{"failureType": "ALL", "thresholdPercent": 10, "minExecuted": 5, "action": "abort"}],
  "timeouts": {"queuedSeconds": 86400, "inProgressSeconds": 1800},
  "retries": [{"failureType": "TIMED_OUT", "count": 1}],
  "soakSeconds": 600,
  "health": {"metric": "crashCount", "maxRatio": 1.5, "confidence": 0.95, "maxSoakSeconds": 3600},
  "approval": {"beforeWaves": [3], "ttlSeconds": 86400},
  "maxPerMinute": 0,
  "maxAttemptsPerRelease": 3,
  "cycleIntervalSeconds": 60
})";

// The plan `{...}` must be refused with a message containing every part.
void ExpectError(const std::string& json, std::initializer_list<std::string> parts) {
  std::string error;
  std::optional<Plan> plan = ParsePlan(json, &error);
  EXPECT_FALSE(plan) << json;
  for (const std::string& part : parts)
    EXPECT_NE(error.find(part), std::string::npos)
        << "json: " << json << "\nerror: " << error << "\nmissing: " << part;
}

void ExpectValid(const std::string& json) {
  std::string error;
  EXPECT_TRUE(ParsePlan(json, &error)) << json << ": " << error;
}

TEST(Plan, EmptyObjectIsTheDocumentedDefault) {
  std::optional<Plan> plan = ParsePlan("{}");
  ASSERT_TRUE(plan);
  EXPECT_EQ(*plan, Plan{});
  ASSERT_EQ(plan->waves.size(), 4u);
  EXPECT_EQ(plan->waves[0].percent, 1);
  EXPECT_EQ(plan->waves[0].min_devices, 1);
  EXPECT_EQ(plan->waves[1].percent, 10);
  EXPECT_EQ(plan->waves[1].min_devices, 0);
  EXPECT_EQ(plan->waves[2].percent, 50);
  EXPECT_EQ(plan->waves[3].percent, 100);
  EXPECT_EQ(plan->success_threshold_percent, 95);
  ASSERT_EQ(plan->abort.size(), 1u);
  EXPECT_EQ(plan->abort[0].failure_type, FailureType::kAll);
  EXPECT_EQ(plan->abort[0].threshold_percent, 10);
  EXPECT_EQ(plan->abort[0].min_executed, 5);
  EXPECT_EQ(plan->abort[0].action, GateAction::kAbort);
  EXPECT_EQ(plan->timeouts.queued_seconds, 86400);
  EXPECT_EQ(plan->timeouts.in_progress_seconds, 1800);
  EXPECT_TRUE(plan->retries.empty());
  EXPECT_EQ(plan->soak_seconds, 600);
  EXPECT_FALSE(plan->health);
  EXPECT_FALSE(plan->approval);
  EXPECT_EQ(plan->max_per_minute, 0);
  EXPECT_EQ(plan->max_attempts_per_release, 3);
  EXPECT_EQ(plan->cycle_interval_seconds, 60);
  EXPECT_FALSE(CheckPlan(Plan{}));
}

TEST(Plan, NestedDefaults) {
  HealthGate h;
  EXPECT_EQ(h.metric, "crashCount");
  EXPECT_EQ(h.max_ratio, 1.5);
  EXPECT_EQ(h.confidence, 0.95);
  EXPECT_EQ(h.max_soak_seconds, 3600);
  EXPECT_EQ(h.action, GateAction::kAbort);
  Approval a;
  EXPECT_TRUE(a.before_waves.empty());
  EXPECT_EQ(a.ttl_seconds, 86400);

  std::optional<Plan> plan = ParsePlan(
      R"({"health": {}, "approval": {}, "abort": [{}], "timeouts": {"queuedSeconds": 5},
          "retries": [{"failureType": "FAILED"}], "waves": [{"percent": 100}]})");
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->health, HealthGate{});
  EXPECT_EQ(plan->approval, Approval{});
  EXPECT_EQ(plan->abort, std::vector<AbortCriterion>{AbortCriterion{}});
  EXPECT_EQ(plan->timeouts.queued_seconds, 5);
  EXPECT_EQ(plan->timeouts.in_progress_seconds, 1800);
  ASSERT_EQ(plan->retries.size(), 1u);
  EXPECT_EQ(plan->retries[0].count, 1);
  ASSERT_EQ(plan->waves.size(), 1u);
  EXPECT_EQ(plan->waves[0].min_devices, 0);
}

TEST(Plan, ParsesTheIssueExample) {
  std::string error;
  std::optional<Plan> plan = ParsePlan(kIssueExample, &error);
  ASSERT_TRUE(plan) << error;
  Plan expected;
  expected.retries = {{FailureType::kTimedOut, 1}};
  expected.health = HealthGate{};
  expected.approval = Approval{{3}, 86400};
  EXPECT_EQ(*plan, expected);
}

TEST(Plan, NullDisablesHealthAndApproval) {
  std::optional<Plan> plan = ParsePlan(R"({"health": null, "approval": null})");
  ASSERT_TRUE(plan);
  EXPECT_FALSE(plan->health);
  EXPECT_FALSE(plan->approval);
}

TEST(Plan, EmptyListsAreAllowed) {
  std::optional<Plan> plan = ParsePlan(R"({"abort": [], "retries": []})");
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->abort.empty());
  EXPECT_TRUE(plan->retries.empty());
  ExpectValid(R"({"approval": {"beforeWaves": []}})");
}

TEST(Plan, RoundTrips) {
  std::vector<std::string> plans = {
      "{}",
      kIssueExample,
      R"({"waves": [{"percent": 0.0001}, {"percent": 33.3333, "minDevices": 7}, {"percent": 100}],
          "successThresholdPercent": 99.95, "abort": [],
          "retries": [{"failureType": "ALL", "count": 2}, {"failureType": "REJECTED", "count": 0}],
          "health": {"metric": "boot_count", "maxRatio": 2.25, "confidence": 0.999,
                     "maxSoakSeconds": 600, "action": "pause"},
          "approval": {"beforeWaves": [1, 2, 3], "ttlSeconds": 1},
          "soakSeconds": 0, "maxPerMinute": 120, "maxAttemptsPerRelease": 1,
          "cycleIntervalSeconds": 0})",
  };
  for (const std::string& json : plans) {
    std::optional<Plan> plan = ParsePlan(json);
    ASSERT_TRUE(plan) << json;
    std::string text = PlanToJson(*plan);
    std::string error;
    std::optional<Plan> again = ParsePlan(text, &error);
    ASSERT_TRUE(again) << text << ": " << error;
    EXPECT_EQ(*again, *plan) << text;
    EXPECT_EQ(PlanToJson(*again), text);
  }
}

TEST(Plan, ToJsonSpellsOutEveryField) {
  nlohmann::json j = nlohmann::json::parse(PlanToJson(Plan{}));
  for (const char* key :
       {"waves", "successThresholdPercent", "abort", "timeouts", "retries", "soakSeconds", "health",
        "approval", "maxPerMinute", "maxAttemptsPerRelease", "cycleIntervalSeconds"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_TRUE(j["health"].is_null());
  EXPECT_TRUE(j["approval"].is_null());
  EXPECT_EQ(j["waves"][0]["percent"], 1);
  EXPECT_TRUE(j["waves"][0]["percent"].is_number_integer());
  EXPECT_EQ(j["waves"][0]["minDevices"], 1);
  EXPECT_EQ(j["abort"][0]["failureType"], "ALL");
  EXPECT_EQ(j["abort"][0]["action"], "abort");
  // Documented order, not alphabetical.
  EXPECT_EQ(PlanToJson(Plan{}).rfind("{\"waves\"", 0), 0u);
}

TEST(Plan, PercentPpm) {
  EXPECT_EQ(PercentPpm(100), 1000000);
  EXPECT_EQ(PercentPpm(1), 10000);
  EXPECT_EQ(PercentPpm(0.0001), 1);
  EXPECT_EQ(PercentPpm(33.3333), 333333);
  EXPECT_EQ(PercentPpm(0), 0);
}

TEST(Plan, EnumNames) {
  for (FailureType t :
       {FailureType::kFailed, FailureType::kRejected, FailureType::kTimedOut, FailureType::kAll})
    EXPECT_EQ(ParseFailureType(ToString(t)), t);
  EXPECT_FALSE(ParseFailureType("failed"));
  EXPECT_FALSE(ParseFailureType("CANCELED"));
  EXPECT_EQ(ParseGateAction("pause"), GateAction::kPause);
  EXPECT_EQ(ParseGateAction("abort"), GateAction::kAbort);
  EXPECT_FALSE(ParseGateAction("Abort"));
}

TEST(PlanErrors, NotJsonOrNotAnObject) {
  ExpectError("", {"not valid JSON"});
  ExpectError("{", {"not valid JSON"});
  ExpectError(R"({"soakSeconds": 1,})", {"not valid JSON"});
  ExpectError("[]", {"the plan must be an object, got array"});
  ExpectError("42", {"the plan must be an object"});
  ExpectError("null", {"the plan must be an object", "null"});
}

TEST(PlanErrors, DuplicateFields) {
  ExpectError(R"({"soakSeconds": 1, "soakSeconds": 2})", {"\"soakSeconds\"", "twice"});
  ExpectError(R"({"health": {"maxRatio": 2, "maxRatio": 3}})", {"\"maxRatio\"", "twice"});
  ExpectError(R"({"waves": [{"percent": 100, "percent": 100}]})", {"\"percent\"", "twice"});
  // The same key in sibling objects is fine.
  ExpectValid(R"({"waves": [{"percent": 50}, {"percent": 100}]})");
}

TEST(PlanErrors, UnknownFieldsAtEveryLevel) {
  ExpectError(R"({"soak": 1})", {"unknown field soak", "soakSeconds", "waves"});
  ExpectError(R"({"waves": [{"percent": 50}, {"precent": 100}]})",
              {"unknown field waves[1].precent", "allowed in waves[1]: percent, minDevices"});
  ExpectError(R"({"abort": [{"failureType": "ALL", "threshold": 5}]})",
              {"unknown field abort[0].threshold", "thresholdPercent", "minExecuted", "action"});
  ExpectError(R"({"timeouts": {"queuedSecond": 5}})",
              {"unknown field timeouts.queuedSecond", "queuedSeconds, inProgressSeconds"});
  ExpectError(R"({"retries": [{"failureType": "FAILED", "retries": 2}]})",
              {"unknown field retries[0].retries", "failureType, count"});
  ExpectError(R"({"health": {"maxratio": 2}})",
              {"unknown field health.maxratio", "metric, maxRatio, confidence"});
  ExpectError(R"({"approval": {"before": [1]}})",
              {"unknown field approval.before", "beforeWaves, ttlSeconds"});
}

TEST(PlanErrors, RequiredFieldsOfListEntries) {
  ExpectError(R"({"waves": [{"minDevices": 1}]})", {"waves[0].percent is required"});
  ExpectError(R"({"retries": [{"count": 1}]})", {"retries[0].failureType is required"});
}

TEST(PlanErrors, WrongTypesNameTheFieldAndTheType) {
  struct Case {
    const char* json;
    std::initializer_list<std::string> parts;
  };
  const Case cases[] = {
      {R"({"waves": {}})", {"waves must be an array, got object"}},
      {R"({"waves": [5]})", {"waves[0] must be an object, got 5"}},
      {R"({"waves": [{"percent": "10"}]})",
       {"waves[0].percent must be a number, got string \"10\""}},
      {R"({"waves": [{"percent": 100, "minDevices": 1.5}]})",
       {"waves[0].minDevices must be an integer, got 1.5"}},
      {R"({"waves": [{"percent": 100, "minDevices": true}]})",
       {"waves[0].minDevices must be an integer, got boolean true"}},
      {R"({"successThresholdPercent": "95"})", {"successThresholdPercent must be a number"}},
      {R"({"successThresholdPercent": null})",
       {"successThresholdPercent must be a number, got null"}},
      {R"({"abort": {"failureType": "ALL"}})", {"abort must be an array"}},
      {R"({"abort": ["ALL"]})", {"abort[0] must be an object"}},
      {R"({"abort": [{"failureType": 1}]})",
       {"abort[0].failureType must be one of FAILED, REJECTED, TIMED_OUT, ALL, got 1"}},
      {R"({"abort": [{"thresholdPercent": "10"}]})",
       {"abort[0].thresholdPercent must be a number"}},
      {R"({"abort": [{"minExecuted": 5.5}]})", {"abort[0].minExecuted must be an integer"}},
      {R"({"abort": [{"action": false}]})",
       {"abort[0].action must be pause or abort, got boolean"}},
      {R"({"timeouts": 60})", {"timeouts must be an object, got 60"}},
      {R"({"timeouts": {"queuedSeconds": "60"}})", {"timeouts.queuedSeconds must be an integer"}},
      {R"({"timeouts": {"inProgressSeconds": 1e3}})",
       {"timeouts.inProgressSeconds must be an integer"}},
      {R"({"retries": {}})", {"retries must be an array"}},
      {R"({"retries": [[]]})", {"retries[0] must be an object, got array"}},
      {R"({"retries": [{"failureType": "FAILED", "count": "1"}]})",
       {"retries[0].count must be an integer"}},
      {R"({"soakSeconds": 1.0})", {"soakSeconds must be an integer, got 1.0"}},
      {R"({"health": true})", {"health must be an object, got boolean true"}},
      {R"({"health": {"metric": 5}})", {"health.metric must be a string, got 5"}},
      {R"({"health": {"maxRatio": "2"}})", {"health.maxRatio must be a number"}},
      {R"({"health": {"confidence": [0.9]}})", {"health.confidence must be a number, got array"}},
      {R"({"health": {"maxSoakSeconds": 1.5}})", {"health.maxSoakSeconds must be an integer"}},
      {R"({"health": {"action": "stop"}})",
       {"health.action must be pause or abort, got string \"stop\""}},
      {R"({"approval": []})", {"approval must be an object, got array"}},
      {R"({"approval": {"beforeWaves": 3}})", {"approval.beforeWaves must be an array, got 3"}},
      {R"({"approval": {"beforeWaves": ["3"]}})",
       {"approval.beforeWaves[0] must be an integer (a wave number), got string \"3\""}},
      {R"({"approval": {"beforeWaves": [2.0]}})", {"approval.beforeWaves[0] must be an integer"}},
      {R"({"approval": {"ttlSeconds": "1"}})", {"approval.ttlSeconds must be an integer"}},
      {R"({"maxPerMinute": 1.5})", {"maxPerMinute must be an integer"}},
      {R"({"maxAttemptsPerRelease": "3"})", {"maxAttemptsPerRelease must be an integer"}},
      {R"({"cycleIntervalSeconds": {}})", {"cycleIntervalSeconds must be an integer, got object"}},
      {R"({"maxPerMinute": 18446744073709551615})", {"maxPerMinute is out of range"}},
  };
  for (const Case& c : cases) ExpectError(c.json, c.parts);
}

TEST(PlanErrors, Waves) {
  ExpectError(R"({"waves": []})", {"waves must list at least one wave, got []"});
  ExpectError(R"({"waves": [{"percent": 0}, {"percent": 100}]})",
              {"waves[0].percent must be in (0, 100], got 0"});
  ExpectError(R"({"waves": [{"percent": -5}, {"percent": 100}]})",
              {"waves[0].percent must be in (0, 100], got -5"});
  ExpectError(R"({"waves": [{"percent": 50}, {"percent": 100.5}]})",
              {"waves[1].percent must be in (0, 100], got 100.5"});
  ExpectError(R"({"waves": [{"percent": 1}, {"percent": 10}, {"percent": 5}, {"percent": 100}]})",
              {"waves[2].percent must be greater than waves[1].percent (10), got 5"});
  ExpectError(R"({"waves": [{"percent": 10}, {"percent": 10}, {"percent": 100}]})",
              {"waves[1].percent must be greater than waves[0].percent (10), got 10"});
  ExpectError(R"({"waves": [{"percent": 10}, {"percent": 90}]})",
              {"waves[1].percent must be 100", "got 90"});
  ExpectError(R"({"waves": [{"percent": 0.00001}, {"percent": 100}]})",
              {"waves[0].percent must have at most 4 decimal places, got 1e-05"});
  ExpectError(R"({"waves": [{"percent": 100, "minDevices": -1}]})",
              {"waves[0].minDevices must be at least 0, got -1"});
  ExpectValid(R"({"waves": [{"percent": 0.0001}, {"percent": 0.0002}, {"percent": 100}]})");
  ExpectValid(R"({"waves": [{"percent": 100, "minDevices": 0}]})");
}

TEST(PlanErrors, Thresholds) {
  ExpectError(R"({"successThresholdPercent": -1})",
              {"successThresholdPercent must be in [0, 100], got -1"});
  ExpectError(R"({"successThresholdPercent": 100.01})",
              {"successThresholdPercent must be in [0, 100], got 100.01"});
  ExpectError(R"({"successThresholdPercent": 99.99999})",
              {"successThresholdPercent must have at most 4 decimal places"});
  ExpectValid(R"({"successThresholdPercent": 0})");
  ExpectValid(R"({"successThresholdPercent": 100})");
}

TEST(PlanErrors, AbortCriteria) {
  ExpectError(
      R"({"abort": [{"failureType": "CANCELED"}]})",
      {"abort[0].failureType must be one of FAILED, REJECTED, TIMED_OUT, ALL", "\"CANCELED\""});
  ExpectError(R"({"abort": [{"failureType": "failed"}]})", {"abort[0].failureType"});
  ExpectError(R"({"abort": [{}, {"action": "stop"}]})",
              {"abort[1].action must be pause or abort, got string \"stop\""});
  ExpectError(R"({"abort": [{"thresholdPercent": 101}]})",
              {"abort[0].thresholdPercent must be in [0, 100], got 101"});
  ExpectError(R"({"abort": [{"thresholdPercent": -0.5}]})",
              {"abort[0].thresholdPercent must be in [0, 100], got -0.5"});
  ExpectError(R"({"abort": [{"minExecuted": -1}]})",
              {"abort[0].minExecuted must be at least 0, got -1"});
  for (const char* type : {"FAILED", "REJECTED", "TIMED_OUT", "ALL"})
    for (const char* action : {"pause", "abort"})
      ExpectValid(std::string(R"({"abort": [{"failureType": ")") + type + R"(", "action": ")" +
                  action + R"(", "thresholdPercent": 0, "minExecuted": 0}]})");
}

TEST(PlanErrors, Timeouts) {
  ExpectError(R"({"timeouts": {"queuedSeconds": 0}})",
              {"timeouts.queuedSeconds must be in [1, 315360000] seconds, got 0"});
  ExpectError(R"({"timeouts": {"inProgressSeconds": -5}})",
              {"timeouts.inProgressSeconds must be in [1, 315360000] seconds, got -5"});
  ExpectError(R"({"timeouts": {"queuedSeconds": 315360001}})",
              {"timeouts.queuedSeconds", "got 315360001"});
  ExpectValid(R"({"timeouts": {"queuedSeconds": 1, "inProgressSeconds": 315360000}})");
}

TEST(PlanErrors, Retries) {
  ExpectError(R"({"retries": [{"failureType": "FAILED", "count": 11}]})",
              {"retries[0].count must be in [0, 10], got 11"});
  ExpectError(R"({"retries": [{"failureType": "FAILED", "count": -1}]})",
              {"retries[0].count must be in [0, 10], got -1"});
  ExpectError(R"({"retries": [{"failureType": "TIMEOUT"}]})",
              {"retries[0].failureType must be one of", "\"TIMEOUT\""});
  ExpectError(
      R"({"retries": [{"failureType": "FAILED"}, {"failureType": "ALL"},
                              {"failureType": "FAILED", "count": 2}]})",
      {"retries[2].failureType FAILED repeats retries[0].failureType", "one rule per failureType"});
  ExpectValid(R"({"retries": [{"failureType": "FAILED", "count": 10},
                             {"failureType": "REJECTED", "count": 0},
                             {"failureType": "TIMED_OUT"}, {"failureType": "ALL"}]})");
}

TEST(PlanErrors, Soak) {
  ExpectError(R"({"soakSeconds": -1})", {"soakSeconds must be in [0, 315360000] seconds, got -1"});
  ExpectValid(R"({"soakSeconds": 0})");
}

TEST(PlanErrors, Health) {
  ExpectError(R"({"health": {"metric": ""}})", {"health.metric must be", "got \"\""});
  ExpectError(R"({"health": {"metric": "crash count"}})", {"health.metric", "\"crash count\""});
  ExpectError(R"({"health": {"metric": "1crash"}})",
              {"health.metric", "not starting with a digit"});
  ExpectError(std::string(R"({"health": {"metric": ")") + std::string(65, 'a') + R"("}})",
              {"health.metric", "1-64"});
  ExpectValid(std::string(R"({"health": {"metric": ")") + std::string(64, 'a') + R"("}})");
  ExpectError(R"({"health": {"maxRatio": 0.99}})",
              {"health.maxRatio must be at least 1, got 0.99"});
  ExpectValid(R"({"health": {"maxRatio": 1}})");
  ExpectError(R"({"health": {"confidence": 0.5}})",
              {"health.confidence must be in (0.5, 1), got 0.5"});
  ExpectError(R"({"health": {"confidence": 1}})", {"health.confidence must be in (0.5, 1), got 1"});
  ExpectError(R"({"health": {"confidence": 95}})", {"health.confidence", "got 95"});
  ExpectValid(R"({"health": {"confidence": 0.51}})");
  ExpectValid(R"({"health": {"confidence": 0.999}})");
  ExpectError(R"({"health": {"maxSoakSeconds": -1}})", {"health.maxSoakSeconds"});
  ExpectError(R"({"soakSeconds": 600, "health": {"maxSoakSeconds": 300}})",
              {"health.maxSoakSeconds must be at least soakSeconds (600), got 300"});
  ExpectValid(R"({"soakSeconds": 600, "health": {"maxSoakSeconds": 600}})");
  ExpectValid(R"({"health": {"action": "pause"}})");
}

TEST(PlanErrors, Approval) {
  ExpectError(R"({"approval": {"beforeWaves": [5]}})",
              {"approval.beforeWaves[0] must be a wave number in [1, 4], got 5"});
  ExpectError(R"({"approval": {"beforeWaves": [0]}})",
              {"approval.beforeWaves[0] must be a wave number in [1, 4], got 0"});
  ExpectError(R"({"approval": {"beforeWaves": [-1]}})",
              {"approval.beforeWaves[0] must be a wave number in [1, 4], got -1"});
  ExpectError(R"({"approval": {"beforeWaves": [18446744073709551615]}})",
              {"approval.beforeWaves[0] must be a wave number", "18446744073709551615"});
  ExpectError(R"({"approval": {"beforeWaves": [2, 3, 2]}})",
              {"approval.beforeWaves[2] repeats wave 2"});
  ExpectError(R"({"waves": [{"percent": 50}, {"percent": 100}], "approval": {"beforeWaves": [3]}})",
              {"approval.beforeWaves[0] must be a wave number in [1, 2], got 3"});
  ExpectError(R"({"approval": {"ttlSeconds": 0}})",
              {"approval.ttlSeconds must be in [1, 315360000] seconds, got 0"});
  ExpectValid(R"({"approval": {"beforeWaves": [1, 4]}})");
  // Waves are read before approval whatever the key order.
  ExpectValid(R"({"approval": {"beforeWaves": [5]}, "waves": [{"percent": 1}, {"percent": 2},
                 {"percent": 3}, {"percent": 4}, {"percent": 100}]})");
}

TEST(PlanErrors, Limits) {
  ExpectError(R"({"maxPerMinute": -1})", {"maxPerMinute must be at least 0, got -1"});
  ExpectError(R"({"maxAttemptsPerRelease": 0})",
              {"maxAttemptsPerRelease must be at least 1, got 0"});
  ExpectError(R"({"cycleIntervalSeconds": -1})",
              {"cycleIntervalSeconds must be in [0, 315360000] seconds, got -1"});
  ExpectValid(R"({"maxPerMinute": 0, "maxAttemptsPerRelease": 1, "cycleIntervalSeconds": 0})");
}

TEST(PlanErrors, CheckPlanJudgesPlansBuiltInCode) {
  Plan plan;
  plan.waves = {{50, 0}, {40, 0}, {100, 0}};
  EXPECT_EQ(CheckPlan(plan), "waves[1].percent must be greater than waves[0].percent (50), got 40");
  plan = Plan{};
  plan.approval = Approval{{2, 2}, 60};
  EXPECT_EQ(CheckPlan(plan), "approval.beforeWaves[1] repeats wave 2 (approval.beforeWaves[0])");
  plan = Plan{};
  plan.health = HealthGate{};
  plan.health->max_ratio = 0.5;
  EXPECT_TRUE(CheckPlan(plan));
  plan = Plan{};
  plan.waves.clear();
  EXPECT_TRUE(CheckPlan(plan));
}

TEST(PlanErrors, LongValuesAreShortened) {
  std::string error;
  ParsePlan(R"({"health": {"metric": ")" + std::string(200, 'x') + R"(!"}})", &error);
  EXPECT_LT(error.size(), 400u) << error;
  ParsePlan(R"({"soakSeconds": ")" + std::string(200, 'x') + R"("})", &error);
  EXPECT_NE(error.find("..."), std::string::npos) << error;
  EXPECT_LT(error.size(), 200u) << error;
}

}  // namespace
}  // namespace fleet
