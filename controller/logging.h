// Logging for the `fleetwave` binary: spdlog's default logger writes to stderr, as human text
// or as JSON lines, at a chosen level (--log-format, --log-level).
//
// JSON: one object per line, {"ts":"2026-11-26T10:00:00.123Z","level":"info","msg":"…", …}
// with the structured fields of LogWith() after "msg". Text: spdlog's usual line, the fields
// left out (the message names what they hold).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace controller {

enum class LogFormat { kText, kJson };

// "text" | "json"; nullopt for anything else.
std::optional<LogFormat> ParseLogFormat(std::string_view text);
// "trace" | "debug" | "info" | "warn" | "error" | "off"; nullopt for anything else.
std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view text);
// The level's name as ParseLogLevel spells it ("warn", not spdlog's "warning").
std::string_view LevelName(spdlog::level::level_enum level);

// Replaces spdlog's default logger by one writing to stderr in `format` at `level`.
// Not thread-safe against concurrent logging: call it at start, before threads log.
void ConfigureLogging(LogFormat format, spdlog::level::level_enum level);
// The format ConfigureLogging set last (text before any call).
LogFormat CurrentLogFormat();

// Fields of a log line, in order; values are JSON (numbers stay numbers).
using LogFields = std::vector<std::pair<std::string, nlohmann::json>>;

// Logs `message` at `level` through the default logger with `fields`, which the JSON format
// adds to the object (a field named ts, level or msg is prefixed with "field."). The fields
// reach the formatter through a thread-local, so this needs a synchronous logger (as set by
// ConfigureLogging).
void LogWith(spdlog::level::level_enum level, const LogFields& fields, std::string_view message);

// spdlog formatter of JSON lines (see the header comment); fields come from LogWith().
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::formatter> clone() const override;
};

// The JSON line for one record, without the trailing newline (for tests and JsonFormatter).
std::string FormatJsonLine(std::chrono::system_clock::time_point time,
                           spdlog::level::level_enum level, std::string_view message,
                           const LogFields& fields);

}  // namespace controller
