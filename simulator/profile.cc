#include "simulator/profile.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <numbers>
#include <set>

#include <nlohmann/json.hpp>

#include "fleet/json_text.h"
#include "fleet/registry.h"

namespace simulator {
namespace {

using Json = nlohmann::json;
using fleet::Describe;
using fleet::FormatNumber;

constexpr double kMaxSeconds = 315360000;  // 10 years, as the plan's durations

std::string Path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

// Reads fields onto structs that already hold their defaults (or the layer below), checking each
// value where it is read so that every message names the exact field the operator wrote.
class Reader {
 public:
  explicit Reader(std::string* error) : error_(error) {}

  bool Fail(std::string message) {
    if (error_) *error_ = std::move(message);
    return false;
  }

  bool ExpectObject(const Json& value, const std::string& path) {
    if (value.is_object()) return true;
    return Fail((path.empty() ? std::string("the profile") : path) + " must be an object, got " +
                Describe(value));
  }

  bool OnlyKeys(const Json& object, const std::string& path,
                std::initializer_list<std::string_view> allowed) {
    for (const auto& [key, value] : object.items()) {
      bool known = false;
      for (std::string_view a : allowed) known = known || a == key;
      if (known) continue;
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return Fail("unknown field " + Path(path, key) + " (allowed" +
                  (path.empty() ? "" : " in " + path) + ": " + list + ")");
    }
    return true;
  }

  // A number in [lo, hi] (`lo_open`: excluding lo). Absent: `out` unchanged.
  bool GetNumber(const Json& object, const std::string& path, const char* key, double lo, double hi,
                 bool lo_open, double* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    const std::string p = Path(path, key);
    if (!it->is_number()) return Fail(p + " must be a number, got " + Describe(*it));
    double v = it->get<double>();
    if (!std::isfinite(v) || (lo_open ? v <= lo : v < lo) || v > hi)
      return Fail(p + " must be in " + (lo_open ? "(" : "[") + FormatNumber(lo) + ", " +
                  FormatNumber(hi) + "], got " + it->dump());
    *out = v;
    return true;
  }

  bool GetProbability(const Json& object, const std::string& path, const char* key, double* out) {
    return GetNumber(object, path, key, 0, 1, false, out);
  }

  bool GetBool(const Json& object, const std::string& path, const char* key, bool* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    if (!it->is_boolean())
      return Fail(Path(path, key) + " must be true or false, got " + Describe(*it));
    *out = it->get<bool>();
    return true;
  }

  bool GetServedImage(const Json& object, const std::string& path, ServedImage* out) {
    auto it = object.find("servedImage");
    if (it == object.end()) return true;
    static constexpr std::pair<const char*, ServedImage> kNames[] = {
        {"declared", ServedImage::kDeclared},
        {"oversized", ServedImage::kOversized},
        {"corrupt", ServedImage::kCorrupt}};
    if (it->is_string())
      for (auto [name, value] : kNames)
        if (*it == name) {
          *out = value;
          return true;
        }
    return Fail(Path(path, "servedImage") +
                " must be \"declared\", \"oversized\" or \"corrupt\", got " + it->dump());
  }

  // Seconds: a number (fixed) or {"min", "max"} (uniform).
  bool GetDistribution(const Json& object, const std::string& path, const char* key,
                       Distribution* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    const std::string p = Path(path, key);
    if (it->is_number()) {
      double v = 0;
      if (!GetNumber(object, path, key, 0, kMaxSeconds, false, &v)) return false;
      *out = {v, v};
      return true;
    }
    if (!it->is_object())
      return Fail(p + " must be seconds (a number) or {\"min\": s, \"max\": s}, got " +
                  Describe(*it));
    Distribution d;
    if (!OnlyKeys(*it, p, {"min", "max"})) return false;
    for (const char* bound : {"min", "max"})
      if (!it->contains(bound)) return Fail(Path(p, bound) + " is required");
    if (!GetNumber(*it, p, "min", 0, kMaxSeconds, false, &d.min) ||
        !GetNumber(*it, p, "max", 0, kMaxSeconds, false, &d.max))
      return false;
    if (d.max < d.min)
      return Fail(p + ".max must be at least " + p + ".min (" + FormatNumber(d.min) + "), got " +
                  FormatNumber(d.max));
    *out = d;
    return true;
  }

  bool ReadStep(const Json& object, const std::string& path, const char* key, StepBehaviour* s) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    const std::string p = Path(path, key);
    return ExpectObject(*it, p) && OnlyKeys(*it, p, {"seconds", "failureProbability"}) &&
           GetDistribution(*it, p, "seconds", &s->seconds) &&
           GetProbability(*it, p, "failureProbability", &s->failure_probability);
  }

  bool ReadUpdate(const Json& u, const std::string& p, UpdateBehaviour* out) {
    return ExpectObject(u, p) &&
           OnlyKeys(u, p,
                    {"rejectProbability", "silentFraction", "crashRateMultiplier", "reportSteps",
                     "servedImage", "download", "install", "reboot"}) &&
           GetProbability(u, p, "rejectProbability", &out->reject_probability) &&
           GetProbability(u, p, "silentFraction", &out->silent_fraction) &&
           GetNumber(u, p, "crashRateMultiplier", 0, 1e6, false, &out->crash_rate_multiplier) &&
           GetBool(u, p, "reportSteps", &out->report_steps) &&
           GetServedImage(u, p, &out->served_image) && ReadStep(u, p, "download", &out->download) &&
           ReadStep(u, p, "install", &out->install) && ReadStep(u, p, "reboot", &out->reboot);
  }

  bool ReadDevices(const Json& d, const std::string& p, DeviceBehaviour* out) {
    if (!ExpectObject(d, p) || !OnlyKeys(d, p, {"offlineFraction", "crashesPerHour", "lateJoin"}) ||
        !GetProbability(d, p, "offlineFraction", &out->offline_fraction) ||
        !GetNumber(d, p, "crashesPerHour", 0, 1e7, false, &out->crashes_per_hour))
      return false;
    if (auto it = d.find("lateJoin"); it != d.end()) {
      const std::string lp = Path(p, "lateJoin");
      if (!ExpectObject(*it, lp) || !OnlyKeys(*it, lp, {"fraction", "delaySeconds"}) ||
          !GetProbability(*it, lp, "fraction", &out->late_join_fraction) ||
          !GetDistribution(*it, lp, "delaySeconds", &out->late_join_delay))
        return false;
    }
    return true;
  }

 private:
  std::string* error_;
};

bool ReadProfile(const Json& root, Profile* profile, Reader& r) {
  if (!r.ExpectObject(root, "") ||
      !r.OnlyKeys(root, "",
                  {"requestTimeoutSeconds", "devices", "update", "models", "reconnectStorms"}) ||
      !r.GetNumber(root, "", "requestTimeoutSeconds", 0, 3600, true,
                   &profile->request_timeout_seconds))
    return false;
  // The profile-wide layers first: models override them whatever the order in the file.
  if (auto it = root.find("devices");
      it != root.end() && !r.ReadDevices(*it, "devices", &profile->devices))
    return false;
  if (auto it = root.find("update");
      it != root.end() && !r.ReadUpdate(*it, "update", &profile->update))
    return false;

  if (auto it = root.find("models"); it != root.end()) {
    if (!r.ExpectObject(*it, "models")) return false;
    for (const auto& [name, m] : it->items()) {
      const std::string p = Path("models", name);
      if (auto problem = fleet::CheckModel(name))
        return r.Fail(p + ": the key must be a model name: " + *problem);
      Profile::Model model{name, profile->devices, profile->update, {}};
      if (!r.ExpectObject(m, p) || !r.OnlyKeys(m, p, {"devices", "update", "releases"}))
        return false;
      if (auto d = m.find("devices");
          d != m.end() && !r.ReadDevices(*d, Path(p, "devices"), &model.devices))
        return false;
      if (auto u = m.find("update");
          u != m.end() && !r.ReadUpdate(*u, Path(p, "update"), &model.update))
        return false;
      if (auto rel = m.find("releases"); rel != m.end()) {
        const std::string rp = Path(p, "releases");
        if (!r.ExpectObject(*rel, rp)) return false;
        for (const auto& [version, u] : rel->items()) {
          const std::string vp = Path(rp, version);
          std::string why;
          auto parsed = fleet::Version::Parse(version, &why);
          if (!parsed) return r.Fail(vp + ": the key must be a semantic version: " + why);
          for (const auto& other : model.releases)
            if (other.version == *parsed)
              return r.Fail(vp + " names the same version as " +
                            Path(rp, other.version.ToString()));
          Profile::Release release{*parsed, model.update};
          if (!r.ReadUpdate(u, vp, &release.update)) return false;
          model.releases.push_back(std::move(release));
        }
      }
      profile->models.push_back(std::move(model));
    }
  }

  if (auto it = root.find("reconnectStorms"); it != root.end()) {
    if (!it->is_array()) return r.Fail("reconnectStorms must be an array, got " + Describe(*it));
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& s = (*it)[i];
      const std::string p = "reconnectStorms[" + std::to_string(i) + "]";
      ReconnectStorm storm;
      if (!r.ExpectObject(s, p) ||
          !r.OnlyKeys(s, p, {"atSeconds", "connectionFraction", "downSeconds"}))
        return false;
      for (const char* required : {"atSeconds", "connectionFraction"})
        if (!s.contains(required)) return r.Fail(Path(p, required) + " is required");
      if (!r.GetNumber(s, p, "atSeconds", 0, kMaxSeconds, false, &storm.at_seconds) ||
          !r.GetProbability(s, p, "connectionFraction", &storm.connection_fraction) ||
          !r.GetDistribution(s, p, "downSeconds", &storm.down_seconds))
        return false;
      profile->reconnect_storms.push_back(storm);
    }
  }
  return true;
}

}  // namespace

const DeviceBehaviour& Profile::Devices(std::string_view model) const {
  for (const Model& m : models)
    if (m.name == model) return m.devices;
  return devices;
}

const UpdateBehaviour& Profile::Update(std::string_view model,
                                       const fleet::Version& version) const {
  for (const Model& m : models) {
    if (m.name != model) continue;
    for (const Release& r : m.releases)
      if (r.version == version) return r.update;
    return m.update;
  }
  return update;
}

std::optional<Profile> ParseProfile(std::string_view json, std::string* error) {
  Reader reader(error);
  // nlohmann keeps the last of duplicate keys silently; refuse them, as the plan parser does.
  std::vector<std::set<std::string>> open;
  std::optional<std::string> duplicate;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      open.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (event == Json::parse_event_t::key && !open.empty()) {
      std::string key = parsed.get<std::string>();
      if (!open.back().insert(key).second && !duplicate) duplicate = key;
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(json.begin(), json.end(), callback);
  } catch (const Json::exception& e) {
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    reader.Fail("the profile is not valid JSON: " + what);
    return std::nullopt;
  }
  if (duplicate) {
    reader.Fail("field " + Json(*duplicate).dump() + " appears twice in one object");
    return std::nullopt;
  }
  Profile profile;
  if (!ReadProfile(root, &profile, reader)) return std::nullopt;
  return profile;
}

// ---- Deterministic randomness ------------------------------------------------------------------

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t HashText(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

Rng::Rng(uint64_t seed, uint64_t device, Purpose purpose, uint64_t key)
    : state_(Mix64(Mix64(Mix64(seed) ^ device) ^ static_cast<uint64_t>(purpose)) ^ key) {}

uint64_t Rng::Next() {
  state_ += 0x9e3779b97f4a7c15ULL;  // SplitMix64
  return Mix64(state_);
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

bool Rng::Chance(double p) { return p > 0 && Uniform() < p; }

double Rng::Seconds(const Distribution& d) {
  if (d.max <= d.min) return d.min;
  return d.min + (d.max - d.min) * Uniform();
}

int64_t Rng::Poisson(double mean) {
  if (!(mean > 0)) return 0;
  if (mean > 64) {
    // Normal approximation (Box-Muller); plenty for crash counts this large.
    double u1 = 1.0 - Uniform(), u2 = Uniform();
    double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
    return std::max<int64_t>(0, std::llround(mean + std::sqrt(mean) * z));
  }
  // Knuth: multiply uniforms until the product drops below e^-mean.
  const double limit = std::exp(-mean);
  int64_t k = 0;
  for (double p = Uniform(); p > limit; p *= Uniform()) ++k;
  return k;
}

}  // namespace simulator
