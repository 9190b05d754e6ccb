#include "simulator/fleet_spec.h"

#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "fleet/device_csv.h"

namespace simulator {
namespace {

TEST(FleetSpec, DeterministicValidAndUnique) {
  FleetSpec spec;
  spec.devices = 5000;
  std::set<std::string> ids;
  int canaries = 0;
  for (int64_t i = 0; i < spec.devices; ++i) {
    fleet::Device d = SimulatedDevice(spec, i);
    EXPECT_FALSE(fleet::CheckDevice(d)) << d.id;
    EXPECT_EQ(d.id, SimulatedDevice(spec, i).id);
    EXPECT_EQ(d.model, spec.models[i % 2]);
    ids.insert(d.id);
    canaries += d.ring == fleet::kCanaryRing;
  }
  EXPECT_EQ(ids.size(), 5000u);
  EXPECT_GT(canaries, 20);  // about 1% of 5000
  EXPECT_LT(canaries, 90);
}

TEST(FleetSpec, CsvParsesBack) {
  FleetSpec spec;
  spec.devices = 10;
  std::stringstream csv;
  WriteFleetCsv(spec, csv);
  std::string line, error;
  std::getline(csv, line);
  auto format = fleet::DeviceCsv::FromHeader(line, &error);
  ASSERT_TRUE(format) << error;
  int rows = 0;
  while (std::getline(csv, line)) {
    auto d = format->ParseRow(line, &error);
    ASSERT_TRUE(d) << error;
    EXPECT_EQ(d->id, SimulatedDevice(spec, rows).id);
    ++rows;
  }
  EXPECT_EQ(rows, 10);
}

}  // namespace
}  // namespace simulator
