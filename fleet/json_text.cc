#include "fleet/json_text.h"

#include <cmath>
#include <cstdint>

namespace fleet {

std::string FormatNumber(double x) {
  if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 1e15) {
    return std::to_string(static_cast<int64_t>(x));
  }
  return nlohmann::json(x).dump();
}

std::string Describe(const nlohmann::json& value) {
  using Json = nlohmann::json;
  std::string text = value.dump();
  if (text.size() > 64) text = text.substr(0, 61) + "...";
  switch (value.type()) {
    case Json::value_t::string:
      return "string " + text;
    case Json::value_t::boolean:
      return "boolean " + text;
    case Json::value_t::null:
      return "null";
    case Json::value_t::array:
      return "array " + text;
    case Json::value_t::object:
      return "object " + text;
    default:
      return text;
  }
}

}  // namespace fleet
