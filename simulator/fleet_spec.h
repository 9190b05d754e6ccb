// The shape of a simulated fleet and the registry records of its devices. Deterministic: the
// same spec always yields the same devices, so a benchmark or a demo can be repeated.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "fleet/registry.h"

namespace simulator {

struct FleetSpec {
  int64_t devices = 20000;
  std::vector<std::string> models = {"sensor-a", "sensor-b"};  // devices alternate between them
  std::string firmware = "1.0.0";
  int canary_per_mille = 10;  // devices in the canary ring, per thousand
  std::string id_prefix = "sim";
};

// Device `index` (0 <= index < spec.devices): id "<prefix>-<model>-<index, 7+ digits>".
fleet::Device SimulatedDevice(const FleetSpec& spec, int64_t index);

// The whole fleet in the `fleetwave device import` CSV format.
void WriteFleetCsv(const FleetSpec& spec, std::ostream& out);

}  // namespace simulator
