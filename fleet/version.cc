#include "fleet/version.h"

#include <cstdio>

namespace fleet {
namespace {

constexpr std::string_view kFormat =
    "MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. 1.4.2 or 2.0.0-rc.1";
// 18 digits always fit in uint64_t and keep the sort key's two-digit length prefix honest.
constexpr size_t kMaxDigits = 18;

bool IsDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

bool IsIdentifierChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-';
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

bool Fail(std::string* error, std::string_view text, std::string_view why) {
  if (error) {
    *error = "\"" + std::string(text) + "\" is not a semantic version (" + std::string(kFormat) +
             "): " + std::string(why);
  }
  return false;
}

bool ParseNumber(std::string_view field, std::string_view name, std::string_view text,
                 uint64_t* out, std::string* error) {
  if (!IsDigits(field)) return Fail(error, text, std::string(name) + " must be a number");
  if (field.size() > 1 && field[0] == '0')
    return Fail(error, text, std::string(name) + " has a leading zero");
  if (field.size() > kMaxDigits)
    return Fail(error, text, std::string(name) + " has more than 18 digits");
  *out = std::stoull(std::string(field));
  return true;
}

// Numbers as a two-digit length then the digits: self-delimiting and ordered numerically.
void AppendNumber(std::string* key, std::string_view digits) {
  char len[3];
  std::snprintf(len, sizeof len, "%02zu", digits.size());
  key->append(len);
  key->append(digits);
}

}  // namespace

std::optional<Version> Version::Parse(std::string_view text, std::string* error) {
  if (text.empty()) {
    Fail(error, text, "it is empty");
    return std::nullopt;
  }
  if (text.size() > 128) {
    Fail(error, text.substr(0, 32), "longer than 128 characters");
    return std::nullopt;
  }
  Version v;
  std::string_view rest = text;
  if (size_t plus = rest.find('+'); plus != std::string_view::npos) {
    std::string_view build = rest.substr(plus + 1);
    for (std::string_view id : Split(build, '.')) {
      if (id.empty()) {
        Fail(error, text, "build metadata has an empty identifier");
        return std::nullopt;
      }
      for (char c : id)
        if (!IsIdentifierChar(c)) {
          Fail(error, text, "build metadata may use only A-Z a-z 0-9 - and dots");
          return std::nullopt;
        }
    }
    v.build_ = std::string(build);
    rest = rest.substr(0, plus);
  }
  if (size_t dash = rest.find('-'); dash != std::string_view::npos) {
    for (std::string_view id : Split(rest.substr(dash + 1), '.')) {
      if (id.empty()) {
        Fail(error, text, "pre-release has an empty identifier");
        return std::nullopt;
      }
      for (char c : id)
        if (!IsIdentifierChar(c)) {
          Fail(error, text, "pre-release may use only A-Z a-z 0-9 - and dots");
          return std::nullopt;
        }
      if (IsDigits(id) && id.size() > 1 && id[0] == '0') {
        Fail(error, text, "numeric pre-release identifier has a leading zero");
        return std::nullopt;
      }
      if (IsDigits(id) && id.size() > kMaxDigits) {
        Fail(error, text, "numeric pre-release identifier has more than 18 digits");
        return std::nullopt;
      }
      v.prerelease_.emplace_back(id);
    }
    rest = rest.substr(0, dash);
  }
  std::vector<std::string_view> core = Split(rest, '.');
  if (core.size() != 3) {
    Fail(error, text,
         core.size() < 3 ? "needs three numbers MAJOR.MINOR.PATCH"
                         : "has more than three numbers before the pre-release");
    return std::nullopt;
  }
  if (!ParseNumber(core[0], "MAJOR", text, &v.major_, error) ||
      !ParseNumber(core[1], "MINOR", text, &v.minor_, error) ||
      !ParseNumber(core[2], "PATCH", text, &v.patch_, error)) {
    return std::nullopt;
  }
  return v;
}

std::string Version::ToString() const {
  std::string s =
      std::to_string(major_) + "." + std::to_string(minor_) + "." + std::to_string(patch_);
  for (size_t i = 0; i < prerelease_.size(); ++i) s += (i == 0 ? "-" : ".") + prerelease_[i];
  if (!build_.empty()) s += "+" + build_;
  return s;
}

// Layout: MAJOR MINOR PATCH as length-prefixed numbers, then '~' for a release or '-' for a
// pre-release ('-' < '~'). Pre-release identifiers follow, each tagged '1' (numeric, compared by
// value) or '2' (alphanumeric, compared by ASCII, ended by '!' which sorts below every identifier
// character so "alpha" < "alphabet"); a final '0' ends the list so fewer identifiers sort first.
std::string Version::SortKey() const {
  std::string key;
  AppendNumber(&key, std::to_string(major_));
  AppendNumber(&key, std::to_string(minor_));
  AppendNumber(&key, std::to_string(patch_));
  if (prerelease_.empty()) {
    key += '~';
    return key;
  }
  key += '-';
  for (const std::string& id : prerelease_) {
    if (IsDigits(id)) {
      key += '1';
      AppendNumber(&key, id);
    } else {
      key += '2';
      key += id;
      key += '!';
    }
  }
  key += '0';
  return key;
}

std::strong_ordering operator<=>(const Version& a, const Version& b) {
  if (auto c = a.major_ <=> b.major_; c != 0) return c;
  if (auto c = a.minor_ <=> b.minor_; c != 0) return c;
  if (auto c = a.patch_ <=> b.patch_; c != 0) return c;
  // A release outranks any of its pre-releases.
  if (a.prerelease_.empty() || b.prerelease_.empty())
    return a.prerelease_.empty() <=> b.prerelease_.empty();
  for (size_t i = 0; i < a.prerelease_.size() && i < b.prerelease_.size(); ++i) {
    const std::string& x = a.prerelease_[i];
    const std::string& y = b.prerelease_[i];
    bool xn = IsDigits(x), yn = IsDigits(y);
    if (xn && yn) {
      if (auto c = std::stoull(x) <=> std::stoull(y); c != 0) return c;
    } else if (xn != yn) {
      return xn ? std::strong_ordering::less : std::strong_ordering::greater;
    } else if (auto c = x.compare(y) <=> 0; c != 0) {
      return c;
    }
  }
  return a.prerelease_.size() <=> b.prerelease_.size();
}

}  // namespace fleet
