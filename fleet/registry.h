// The device and release registry records, and the rules every value must satisfy.
//
// Each Check* function returns nullopt when the value is acceptable, or a message that names the
// field, quotes the value and says what is allowed; callers show it to the user unchanged.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "fleet/signed_manifest.h"

namespace fleet {

inline constexpr std::string_view kDefaultRing = "default";
inline constexpr std::string_view kCanaryRing = "canary";

struct Device {
  std::string id;  // the MQTT thing name
  std::string model;
  std::string firmware;  // a semantic version
  std::string ring{kDefaultRing};
  std::map<std::string, std::string> attributes;
};

enum class ReleaseState { kActive, kHalted, kRetired };
std::string_view ToString(ReleaseState state);
std::optional<ReleaseState> ParseReleaseState(std::string_view text);

struct Release {
  std::string model;
  std::string version;  // a semantic version
  std::string url;
  std::string sha256;  // 64 lowercase hex characters
  int64_t size = 0;    // bytes
  ReleaseState state = ReleaseState::kActive;
  int64_t counter = 0;  // the signed manifest's ordering counter (>= 0; 0 when unsigned)
  // The release key's signature of ManifestOf(*this) (fleet/signed_manifest.h); none: unsigned.
  std::optional<Signature> signature;
};

// Device ids are thing names inside MQTT topics: 1-128 of [A-Za-z0-9_.:-], so never / + # $.
std::optional<std::string> CheckDeviceId(std::string_view id);
// Models appear in job ids and topics: 1-64 of [A-Za-z0-9_.-].
std::optional<std::string> CheckModel(std::string_view model);
// Rings: 1-64 of [A-Za-z0-9_.-].
std::optional<std::string> CheckRing(std::string_view ring);
// `field` names the flag or column in the message ("firmware", "version").
std::optional<std::string> CheckVersion(std::string_view field, std::string_view version);
std::optional<std::string> CheckUrl(std::string_view url);
std::optional<std::string> CheckSha256(std::string_view sha256);
std::optional<std::string> CheckSize(int64_t size);
// Attribute keys: 1-64 of [A-Za-z0-9_.-]; values at most 256 bytes.
std::optional<std::string> CheckAttribute(std::string_view key, std::string_view value);

// The first problem with a whole record, or nullopt.
std::optional<std::string> CheckDevice(const Device& device);
std::optional<std::string> CheckRelease(const Release& release);

}  // namespace fleet
