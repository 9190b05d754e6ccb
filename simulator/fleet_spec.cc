#include "simulator/fleet_spec.h"

#include <cstdio>

namespace simulator {
namespace {

// SplitMix64: a cheap, well-mixed hash so canaries are spread evenly over models and ids.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

fleet::Device SimulatedDevice(const FleetSpec& spec, int64_t index) {
  fleet::Device device;
  device.model = spec.models[static_cast<size_t>(index) % spec.models.size()];
  char number[24];
  std::snprintf(number, sizeof number, "%07lld", static_cast<long long>(index));
  device.id = spec.id_prefix + "-" + device.model + "-" + number;
  device.firmware = spec.firmware;
  bool canary =
      Mix(static_cast<uint64_t>(index)) % 1000 < static_cast<uint64_t>(spec.canary_per_mille);
  device.ring = canary ? std::string(fleet::kCanaryRing) : std::string(fleet::kDefaultRing);
  return device;
}

void WriteFleetCsv(const FleetSpec& spec, std::ostream& out) {
  out << "id,model,firmware,ring\n";
  for (int64_t i = 0; i < spec.devices; ++i) {
    fleet::Device d = SimulatedDevice(spec, i);
    out << d.id << ',' << d.model << ',' << d.firmware << ',' << d.ring << '\n';
  }
}

}  // namespace simulator
