#include "controller/logging.h"

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace controller {
namespace {

// Set by LogWith() for the duration of its one log call on this thread.
thread_local const LogFields* t_fields = nullptr;

std::atomic<LogFormat> g_format{LogFormat::kText};

// A JSON string literal. Invalid UTF-8 is replaced (U+FFFD), never an error: log text may
// quote what a device sent.
std::string Quote(std::string_view s) {
  return nlohmann::json(std::string(s))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::optional<LogFormat> ParseLogFormat(std::string_view text) {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  return std::nullopt;
}

std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view text) {
  using spdlog::level::level_enum;
  for (level_enum l : {level_enum::trace, level_enum::debug, level_enum::info, level_enum::warn,
                       level_enum::err, level_enum::off}) {
    if (text == LevelName(l)) return l;
  }
  return std::nullopt;
}

std::string_view LevelName(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    case spdlog::level::off:
    default:
      return "off";
  }
}

void ConfigureLogging(LogFormat format, spdlog::level::level_enum level) {
  std::shared_ptr<spdlog::logger> logger;
  if (format == LogFormat::kJson) {
    logger =
        std::make_shared<spdlog::logger>("", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    // Coloured levels only when stderr is a terminal.
    logger = std::make_shared<spdlog::logger>(
        "", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  }
  logger->set_level(level);
  // Warnings and errors are rare and matter after a crash: do not lose them in a buffer.
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  g_format = format;
}

LogFormat CurrentLogFormat() { return g_format; }

void LogWith(spdlog::level::level_enum level, const LogFields& fields, std::string_view message) {
  spdlog::logger* logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) return;
  t_fields = &fields;
  try {
    logger->log(level, "{}", message);
  } catch (...) {
    t_fields = nullptr;
    throw;
  }
  t_fields = nullptr;
}

std::string FormatJsonLine(std::chrono::system_clock::time_point time,
                           spdlog::level::level_enum level, std::string_view message,
                           const LogFields& fields) {
  const auto since_epoch = time.time_since_epoch();
  const time_t seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count() % 1000);
  struct tm utc;
  gmtime_r(&seconds, &utc);
  char ts[96];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                millis < 0 ? 0 : millis);

  std::string line = "{\"ts\":\"";
  line += ts;
  line += "\",\"level\":\"";
  line += LevelName(level);
  line += "\",\"msg\":";
  line += Quote(message);
  for (const auto& [key, value] : fields) {
    const bool reserved = key == "ts" || key == "level" || key == "msg";
    line += ',';
    line += Quote(reserved ? "field." + key : key);
    line += ':';
    line += value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  line += '}';
  return line;
}

void JsonFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
  static const LogFields kNone;
  const std::string line =
      FormatJsonLine(msg.time, msg.level, std::string_view(msg.payload.data(), msg.payload.size()),
                     t_fields ? *t_fields : kNone);
  dest.append(line.data(), line.data() + line.size());
  dest.push_back('\n');
}

std::unique_ptr<spdlog::formatter> JsonFormatter::clone() const {
  return std::make_unique<JsonFormatter>();
}

}  // namespace controller
