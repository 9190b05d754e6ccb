#include "fleet/registry.h"

#include "fleet/version.h"

namespace fleet {
namespace {

bool IsNameChar(char c, bool allow_colon) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
         c == '.' || c == '-' || (allow_colon && c == ':');
}

std::string Quote(std::string_view value) {
  // Long or binary input is shown shortened and escaped, so the message stays one short line.
  std::string out = "\"";
  size_t shown = 0;
  for (char c : value) {
    if (++shown > 64) {
      out += "...";
      break;
    }
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::optional<std::string> CheckName(std::string_view field, std::string_view value, size_t max_len,
                                     bool allow_colon) {
  bool ok = !value.empty() && value.size() <= max_len;
  for (char c : value) ok = ok && IsNameChar(c, allow_colon);
  if (ok) return std::nullopt;
  return std::string(field) + " " + Quote(value) + " is invalid: use 1 to " +
         std::to_string(max_len) + " of the characters A-Z a-z 0-9 _ . -" +
         (allow_colon ? " :" : "") + " (no spaces, / + # or $)";
}

}  // namespace

std::string_view ToString(ReleaseState state) {
  switch (state) {
    case ReleaseState::kActive:
      return "active";
    case ReleaseState::kHalted:
      return "halted";
    case ReleaseState::kRetired:
      return "retired";
  }
  return "active";
}

std::optional<ReleaseState> ParseReleaseState(std::string_view text) {
  if (text == "active") return ReleaseState::kActive;
  if (text == "halted") return ReleaseState::kHalted;
  if (text == "retired") return ReleaseState::kRetired;
  return std::nullopt;
}

std::optional<std::string> CheckDeviceId(std::string_view id) {
  return CheckName("device id", id, 128, /*allow_colon=*/true);
}

std::optional<std::string> CheckModel(std::string_view model) {
  return CheckName("model", model, 64, /*allow_colon=*/false);
}

std::optional<std::string> CheckRing(std::string_view ring) {
  return CheckName("ring", ring, 64, /*allow_colon=*/false);
}

std::optional<std::string> CheckVersion(std::string_view field, std::string_view version) {
  std::string why;
  if (Version::Parse(version, &why)) return std::nullopt;
  return std::string(field) + " " + why;
}

std::optional<std::string> CheckUrl(std::string_view url) {
  std::string_view rest;
  if (url.starts_with("https://")) {
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else {
    return "url " + Quote(url) + " is invalid: use an http:// or https:// URL";
  }
  bool ok = !rest.empty() && rest[0] != '/' && url.size() <= 2048;
  for (char c : url) ok = ok && c > 0x20 && c < 0x7f;
  if (ok) return std::nullopt;
  return "url " + Quote(url) +
         " is invalid: use an http:// or https:// URL with a host, at most 2048 printable "
         "characters and no spaces";
}

std::optional<std::string> CheckSha256(std::string_view sha256) {
  bool ok = sha256.size() == 64;
  for (char c : sha256) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (ok) return std::nullopt;
  return "sha256 " + Quote(sha256) +
         " is invalid: use the image's SHA-256 digest as 64 lowercase hex characters";
}

std::optional<std::string> CheckSize(int64_t size) {
  if (size > 0) return std::nullopt;
  return "size " + std::to_string(size) + " is invalid: use the image size in bytes, above 0";
}

std::optional<std::string> CheckAttribute(std::string_view key, std::string_view value) {
  if (auto e = CheckName("attribute key", key, 64, /*allow_colon=*/false)) return e;
  if (value.size() > 256)
    return "attribute " + std::string(key) + " has a value of " + std::to_string(value.size()) +
           " bytes: use at most 256";
  return std::nullopt;
}

std::optional<std::string> CheckDevice(const Device& device) {
  if (auto e = CheckDeviceId(device.id)) return e;
  if (auto e = CheckModel(device.model)) return e;
  if (auto e = CheckVersion("firmware", device.firmware)) return e;
  if (auto e = CheckRing(device.ring)) return e;
  for (const auto& [key, value] : device.attributes)
    if (auto e = CheckAttribute(key, value)) return e;
  return std::nullopt;
}

std::optional<std::string> CheckRelease(const Release& release) {
  if (auto e = CheckModel(release.model)) return e;
  if (auto e = CheckVersion("version", release.version)) return e;
  if (auto e = CheckUrl(release.url)) return e;
  if (auto e = CheckSha256(release.sha256)) return e;
  if (auto e = CheckSize(release.size)) return e;
  if (release.counter < 0)
    return "counter must be zero or more (it orders signed releases), got " +
           std::to_string(release.counter);
  return std::nullopt;
}

}  // namespace fleet
