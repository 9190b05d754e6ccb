// Semantic versions (semver.org 2.0.0) and their precedence.
//
// A firmware version is MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]. Precedence follows the
// specification: numeric fields compare as numbers (1.10.0 > 1.9.0), a pre-release sorts before
// its release (2.0.0-rc.1 < 2.0.0), build metadata is ignored.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleet {

class Version {
 public:
  // Parses `text`. On failure returns nullopt and, when `error` is given, says what is wrong.
  static std::optional<Version> Parse(std::string_view text, std::string* error = nullptr);

  uint64_t major() const { return major_; }
  uint64_t minor() const { return minor_; }
  uint64_t patch() const { return patch_; }
  const std::vector<std::string>& prerelease() const { return prerelease_; }
  const std::string& build() const { return build_; }

  // The text it was parsed from (canonical: parsing refuses leading zeros).
  std::string ToString() const;

  // A string whose byte order (COLLATE "C") is this version's precedence, so PostgreSQL can
  // compare versions with plain `<` and indexes. Versions differing only in build metadata share
  // a key.
  std::string SortKey() const;

  friend std::strong_ordering operator<=>(const Version& a, const Version& b);
  friend bool operator==(const Version& a, const Version& b) { return (a <=> b) == 0; }

 private:
  uint64_t major_ = 0;
  uint64_t minor_ = 0;
  uint64_t patch_ = 0;
  std::vector<std::string> prerelease_;
  std::string build_;
};

}  // namespace fleet
