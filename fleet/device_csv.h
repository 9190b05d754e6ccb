// Parsing the device import format: CSV (RFC 4180 quoting, one record per line) whose header
// names the columns id, model, firmware and optionally ring, in any order.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/registry.h"

namespace fleet {

class DeviceCsv {
 public:
  // Reads the header line. On failure returns nullopt and sets `error`.
  static std::optional<DeviceCsv> FromHeader(std::string_view header, std::string* error);

  // Parses and validates one data line (without its line break; a trailing '\r' is ignored).
  // On failure returns nullopt and sets `error` to the reason, naming the column.
  std::optional<Device> ParseRow(std::string_view line, std::string* error) const;

 private:
  int id_ = -1, model_ = -1, firmware_ = -1, ring_ = -1;
  size_t columns_ = 0;
};

// Splits one CSV line into fields. Returns nullopt (and sets `error`) on broken quoting.
std::optional<std::vector<std::string>> SplitCsvLine(std::string_view line, std::string* error);

}  // namespace fleet
