#include "db/registry.h"

#include <sstream>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "fleet/version.h"
#include "tests/support/test_database.h"

namespace db {
namespace {

using testing_support::TestDatabase;

class RegistryTest : public ::testing::Test {
 protected:
  TestDatabase database_;
  std::unique_ptr<pqxx::connection> conn_ = database_.Connect();
  Registry registry_{*conn_};

  int64_t Count(const std::string& table) {
    pqxx::read_transaction txn(*conn_);
    return txn.exec1("select count(*) from fleetwave." + table)[0].as<int64_t>();
  }
  ImportReport Import(const std::string& csv) {
    std::istringstream in(csv);
    return registry_.ImportDevices(in);
  }
};

TEST_F(RegistryTest, AddAndFindDevice) {
  registry_.AddDevice({"robot-1", "arm", "1.4.2", "canary", {{"site", "lyon"}}});
  auto r = registry_.FindDevice("robot-1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->device.model, "arm");
  EXPECT_EQ(r->device.firmware, "1.4.2");
  EXPECT_EQ(r->device.ring, "canary");
  EXPECT_EQ(r->device.attributes.at("site"), "lyon");
  EXPECT_FALSE(r->last_seen);
  EXPECT_FALSE(r->quarantined);
  EXPECT_FALSE(registry_.FindDevice("robot-2"));
}

TEST_F(RegistryTest, DuplicateDeviceIsAConflictAndChangesNothing) {
  registry_.AddDevice({"robot-1", "arm", "1.0.0"});
  EXPECT_THROW(registry_.AddDevice({"robot-1", "leg", "2.0.0"}), Conflict);
  EXPECT_EQ(registry_.FindDevice("robot-1")->device.model, "arm");
}

TEST_F(RegistryTest, ForEachDeviceFiltersByModelInIdOrder) {
  registry_.AddDevice({"c", "arm", "1.0.0"});
  registry_.AddDevice({"a", "arm", "1.0.0"});
  registry_.AddDevice({"b", "leg", "1.0.0"});
  std::vector<std::string> ids;
  registry_.ForEachDevice(std::string("arm"),
                          [&](const DeviceRecord& r) { ids.push_back(r.device.id); });
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "c"}));
  ids.clear();
  registry_.ForEachDevice(std::nullopt, [&](const DeviceRecord& r) { ids.push_back(r.device.id); });
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(RegistryTest, FirmwareKeysCompareAsSemverInSql) {
  registry_.AddDevice({"old", "arm", "1.9.0"});
  registry_.AddDevice({"rc", "arm", "1.10.0-rc.1"});
  registry_.AddDevice({"new", "arm", "1.10.0"});
  pqxx::read_transaction txn(*conn_);
  auto rows = txn.exec_params(
      "select id from fleetwave.devices where firmware_key < $1 order by firmware_key",
      fleet::Version::Parse("1.10.0")->SortKey());
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][0].as<std::string>(), "old");
  EXPECT_EQ(rows[1][0].as<std::string>(), "rc");
}

TEST_F(RegistryTest, ImportsAValidFile) {
  auto report =
      Import("id,model,firmware,ring\nr1,arm,1.0.0,canary\r\nr2,arm,1.0.0,\n\nr3,leg,2.0.0,\n");
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.rows, 3);
  EXPECT_EQ(report.imported, 3);
  EXPECT_EQ(Count("devices"), 3);
  EXPECT_EQ(registry_.FindDevice("r1")->device.ring, "canary");
  EXPECT_EQ(registry_.FindDevice("r2")->device.ring, "default");
}

TEST_F(RegistryTest, ImportWithABadRowImportsNothing) {
  auto report = Import("id,model,firmware\nr1,arm,1.0.0\nr/2,arm,1.0.0\nr3,arm,1.0\nr4,arm\n");
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.imported, 0);
  EXPECT_EQ(report.bad_rows, 3);
  ASSERT_EQ(report.problems.size(), 3u);
  EXPECT_EQ(report.problems[0].line, 3);
  EXPECT_NE(report.problems[0].reason.find("device id \"r/2\""), std::string::npos);
  EXPECT_EQ(report.problems[1].line, 4);
  EXPECT_NE(report.problems[1].reason.find("firmware"), std::string::npos);
  EXPECT_EQ(report.problems[2].line, 5);
  EXPECT_EQ(Count("devices"), 0);
}

TEST_F(RegistryTest, ImportRefusesDuplicatesInsideTheFileAndAgainstTheDatabase) {
  registry_.AddDevice({"existing", "arm", "1.0.0"});
  auto report = Import("id,model,firmware\nr1,arm,1.0.0\nexisting,arm,1.0.0\nr1,arm,1.0.0\n");
  EXPECT_FALSE(report.ok());
  ASSERT_EQ(report.problems.size(), 2u);
  EXPECT_EQ(report.problems[0].line, 3);
  EXPECT_NE(report.problems[0].reason.find("already registered"), std::string::npos);
  EXPECT_EQ(report.problems[1].line, 4);
  EXPECT_NE(report.problems[1].reason.find("first on line 2"), std::string::npos);
  EXPECT_EQ(Count("devices"), 1);
}

TEST_F(RegistryTest, ImportListsTheFirstTwentyProblemsAndCountsAll) {
  std::string csv = "id,model,firmware\n";
  for (int i = 0; i < 50; ++i) csv += "bad/" + std::to_string(i) + ",arm,1.0.0\n";
  auto report = Import(csv);
  EXPECT_EQ(report.bad_rows, 50);
  ASSERT_EQ(report.problems.size(), kMaxImportProblems);
  EXPECT_EQ(report.problems.front().line, 2);
  EXPECT_EQ(report.problems.back().line, 21);
}

TEST_F(RegistryTest, ImportRefusesEmptyFilesAndBadHeaders) {
  auto report = Import("");
  EXPECT_FALSE(report.ok());
  EXPECT_NE(report.problems[0].reason.find("empty"), std::string::npos);
  report = Import("name,model,firmware\nr1,arm,1.0.0\n");
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.problems[0].line, 1);
  EXPECT_NE(report.problems[0].reason.find("\"name\" is unknown"), std::string::npos);
  EXPECT_EQ(Count("devices"), 0);
}

TEST_F(RegistryTest, ImportReportsProgress) {
  std::string csv = "id,model,firmware\n";
  for (int i = 0; i < 120000; ++i) csv += "d" + std::to_string(i) + ",arm,1.0.0\n";
  std::istringstream in(csv);
  std::vector<int64_t> calls;
  auto report = registry_.ImportDevices(in, [&](int64_t rows) { calls.push_back(rows); });
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(calls, (std::vector<int64_t>{50000, 100000, 120000}));
  EXPECT_EQ(Count("devices"), 120000);
}

TEST_F(RegistryTest, ReleasesListNewestVersionFirstPerModel) {
  const std::string sha(64, 'a');
  registry_.AddRelease({"arm", "1.9.0", "https://fw/1", sha, 1});
  registry_.AddRelease({"arm", "1.10.0", "https://fw/2", sha, 2});
  registry_.AddRelease({"arm", "1.10.0-rc.1", "https://fw/3", sha, 3});
  registry_.AddRelease({"leg", "0.1.0", "https://fw/4", sha, 4});
  auto releases = registry_.ListReleases();
  ASSERT_EQ(releases.size(), 4u);
  EXPECT_EQ(releases[0].release.version, "1.10.0");
  EXPECT_EQ(releases[1].release.version, "1.10.0-rc.1");
  EXPECT_EQ(releases[2].release.version, "1.9.0");
  EXPECT_EQ(releases[3].release.model, "leg");
  EXPECT_EQ(registry_.ListReleases(std::string("leg")).size(), 1u);
  EXPECT_THROW(registry_.AddRelease({"arm", "1.9.0", "https://fw/x", sha, 9}), Conflict);
}

TEST_F(RegistryTest, HaltAndResumeARelease) {
  registry_.AddRelease({"arm", "2.0.0", "https://fw/2", std::string(64, 'b'), 7});
  EXPECT_EQ(registry_.SetReleaseState("arm", "2.0.0", fleet::ReleaseState::kHalted),
            fleet::ReleaseState::kActive);
  EXPECT_EQ(registry_.ListReleases()[0].release.state, fleet::ReleaseState::kHalted);
  EXPECT_EQ(registry_.SetReleaseState("arm", "2.0.0", fleet::ReleaseState::kActive),
            fleet::ReleaseState::kHalted);
  EXPECT_THROW(registry_.SetReleaseState("arm", "9.9.9", fleet::ReleaseState::kHalted), NotFound);
}

TEST(Connection, UnreachableDatabaseNamesTheAddress) {
  try {
    Connect("postgresql://fleetwave@127.0.0.1:1/fleetwave?connect_timeout=2");
    FAIL() << "connected to port 1";
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("cannot connect to PostgreSQL at 127.0.0.1:1/fleetwave"),
              std::string::npos)
        << e.what();
  }
}

TEST(Connection, WithDatabaseKeepsEverythingButTheName) {
  std::string c = WithDatabase("postgresql://u@127.0.0.1:5433/a?connect_timeout=3", "b");
  EXPECT_NE(c.find("host='127.0.0.1'"), std::string::npos) << c;
  EXPECT_NE(c.find("port='5433'"), std::string::npos) << c;
  EXPECT_NE(c.find("user='u'"), std::string::npos) << c;
  EXPECT_NE(c.find("dbname='b'"), std::string::npos) << c;
  EXPECT_EQ(DescribeTarget(c), "127.0.0.1:5433/b as u");
}

}  // namespace
}  // namespace db
