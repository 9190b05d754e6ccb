// Log formats and flags' values, without servers.
#include "controller/logging.h"

#include <chrono>
#include <memory>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <nlohmann/json.hpp>

namespace controller {
namespace {

using Json = nlohmann::json;

std::chrono::system_clock::time_point At(int64_t millis) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(millis));
}

TEST(LoggingTest, FlagValuesParse) {
  EXPECT_EQ(ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("JSON"));
  EXPECT_FALSE(ParseLogFormat(""));
  EXPECT_EQ(ParseLogLevel("trace"), spdlog::level::trace);
  EXPECT_EQ(ParseLogLevel("debug"), spdlog::level::debug);
  EXPECT_EQ(ParseLogLevel("info"), spdlog::level::info);
  EXPECT_EQ(ParseLogLevel("warn"), spdlog::level::warn);
  EXPECT_EQ(ParseLogLevel("error"), spdlog::level::err);
  EXPECT_EQ(ParseLogLevel("off"), spdlog::level::off);
  EXPECT_FALSE(ParseLogLevel("warning"));
  EXPECT_FALSE(ParseLogLevel("critical"));
  EXPECT_FALSE(ParseLogLevel("INFO"));
}

TEST(LoggingTest, AJsonLineHasTimeLevelMessageThenFields) {
  // 2026-11-26T10:00:00.123Z
  const std::string line = FormatJsonLine(At(1795687200123), spdlog::level::info,
                                          "rollout fw-a wave 2: running -> passed",
                                          {{"cycle", 3},
                                           {"rollout", "fw-a-2.0.0-c3"},
                                           {"wave", 2},
                                           {"from", "running"},
                                           {"to", "passed"}});
  EXPECT_EQ(line,
            "{\"ts\":\"2026-11-26T10:00:00.123Z\",\"level\":\"info\",\"msg\":\"rollout fw-a wave "
            "2: running -> passed\",\"cycle\":3,\"rollout\":\"fw-a-2.0.0-c3\",\"wave\":2,"
            "\"from\":\"running\",\"to\":\"passed\"}");
}

TEST(LoggingTest, JsonEscapesEverythingAMessageMayHold) {
  const std::string msg = "quote \" backslash \\ newline \n tab \t bell \x07 é \xff end";
  const std::string line = FormatJsonLine(At(0), spdlog::level::warn, msg, {{"k\"ey", "v\n"}});
  EXPECT_EQ(line.find('\n'), std::string::npos);  // one line
  Json j = Json::parse(line);
  EXPECT_EQ(j["ts"], "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(j["level"], "warn");
  // Invalid UTF-8 (\xff) becomes U+FFFD; the rest survives exactly.
  EXPECT_EQ(j["msg"], "quote \" backslash \\ newline \n tab \t bell \x07 é \xEF\xBF\xBD end");
  EXPECT_EQ(j["k\"ey"], "v\n");
}

TEST(LoggingTest, FieldsCannotOverwriteTheFixedKeys) {
  Json j = Json::parse(FormatJsonLine(At(0), spdlog::level::err, "m", {{"msg", "x"}, {"ts", 1}}));
  EXPECT_EQ(j["msg"], "m");
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["field.msg"], "x");
  EXPECT_EQ(j["field.ts"], 1);
}

TEST(LoggingTest, TheFormatterWritesLogWithFieldsAndPlainLines) {
  auto stream = std::make_shared<std::ostringstream>();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*stream);
  auto logger = std::make_shared<spdlog::logger>("", sink);
  logger->set_formatter(std::make_unique<JsonFormatter>());
  logger->set_level(spdlog::level::debug);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  LogWith(spdlog::level::info, {{"cycle", 7}, {"rollouts", {"a", "b"}}}, "cycle 7: planned");
  spdlog::info("plain {}", 42);
  LogWith(spdlog::level::trace, {{"cycle", 8}}, "below the level: not written");
  spdlog::set_default_logger(previous);

  std::istringstream lines(stream->str());
  std::string first, second, third;
  ASSERT_TRUE(std::getline(lines, first));
  ASSERT_TRUE(std::getline(lines, second));
  EXPECT_FALSE(std::getline(lines, third));
  Json a = Json::parse(first), b = Json::parse(second);
  EXPECT_EQ(a["msg"], "cycle 7: planned");
  EXPECT_EQ(a["cycle"], 7);
  EXPECT_EQ(a["rollouts"], Json({"a", "b"}));
  EXPECT_EQ(b["msg"], "plain 42");
  EXPECT_FALSE(b.contains("cycle"));  // the fields were for one line only
}

}  // namespace
}  // namespace controller
