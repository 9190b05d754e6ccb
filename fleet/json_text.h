// How JSON values read from operator files (plans, simulator profiles) appear in error messages.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace fleet {

// A number as an operator wrote it: 5, not 5.0 or 5.000000.
std::string FormatNumber(double x);

// A JSON value in an error message: its type and a short rendering of it ("string \"x\"").
std::string Describe(const nlohmann::json& value);

}  // namespace fleet
