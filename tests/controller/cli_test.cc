// The `fleetwave` registry commands, run as a user runs them, against a real PostgreSQL.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "db/registry.h"
#include "tests/support/process.h"
#include "tests/support/test_database.h"
#include "tests/support/test_device.h"

namespace {

// The whole file (empty while it does not exist yet).
std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

using testing::HasSubstr;
using testing_support::FleetwaveBinary;
using testing_support::ProcessResult;
using testing_support::RunProcess;
using testing_support::TestDatabase;

class CliTest : public ::testing::Test {
 protected:
  TestDatabase database_;
  const std::string sha_ = std::string(64, 'c');

  ProcessResult Run(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), FleetwaveBinary());
    // As `eval "$(scripts/stack env)"` sets them: the application's role, and the owner's for
    // `fleetwave migrate`.
    return RunProcess(args,
                      {{"FLEETWAVE_DB", database_.conninfo()},
                       {"FLEETWAVE_DB_OWNER", database_.owner_conninfo()}},
                      input);
  }
  // Runs and expects success, returning stdout.
  std::string Ok(const std::vector<std::string>& args, const std::string& input = "") {
    ProcessResult r = Run(args, input);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }
  // Runs and expects a usage error (exit 2) whose message contains every part.
  void Usage(const std::vector<std::string>& args, std::initializer_list<const char*> parts) {
    ProcessResult r = Run(args);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    for (const char* p : parts) EXPECT_THAT(r.err, HasSubstr(p));
  }
  int64_t Devices() {
    auto conn = database_.Connect();
    pqxx::read_transaction txn(*conn);
    return txn.exec1("select count(*) from fleetwave.devices")[0].as<int64_t>();
  }
};

TEST_F(CliTest, NoCommandIsAUsageError) {
  ProcessResult r = Run({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--help"));
  Usage({"device", "frobnicate"}, {"fleetwave device --help"});
}

TEST_F(CliTest, EveryCommandHasHelpWithAnExample) {
  for (std::vector<std::string> cmd : {std::vector<std::string>{"migrate"},
                                       {"device", "add"},
                                       {"device", "import"},
                                       {"device", "list"},
                                       {"device", "show"},
                                       {"release", "add"},
                                       {"release", "sign"},
                                       {"keys", "generate"},
                                       {"release", "list"},
                                       {"release", "halt"},
                                       {"release", "resume"}}) {
    cmd.push_back("--help");
    ProcessResult r = Run(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd[0];
    EXPECT_THAT(r.out, HasSubstr("Example:\n  fleetwave " + cmd[0]));
  }
}

TEST_F(CliTest, MissingDatabaseSettingIsAUsageError) {
  ProcessResult r = RunProcess({FleetwaveBinary(), "device", "list"}, {{"FLEETWAVE_DB", ""}});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("FLEETWAVE_DB"));
}

TEST_F(CliTest, UnreachableDatabaseIsARuntimeErrorNamingTheAddress) {
  ProcessResult r = RunProcess({FleetwaveBinary(), "--db",
                                "postgresql://fleetwave@127.0.0.1:1/fleetwave", "device", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot connect to PostgreSQL at 127.0.0.1:1/fleetwave"));
}

TEST_F(CliTest, MigrateIsIdempotentAndShowsStatus) {
  EXPECT_THAT(Ok({"migrate"}), HasSubstr("0 applied now"));  // the fixture already migrated
  EXPECT_THAT(Ok({"migrate", "--status"}), HasSubstr("0001_init.sql"));
}

TEST_F(CliTest, MigrateOnAFreshDatabaseAppliesEverything) {
  TestDatabase fresh(/*migrate=*/false);
  const std::map<std::string, std::string> env = {{"FLEETWAVE_DB", fresh.conninfo()},
                                                  {"FLEETWAVE_DB_OWNER", fresh.owner_conninfo()}};
  ProcessResult r = RunProcess({FleetwaveBinary(), "migrate"}, env);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("applied 0001_init.sql"));
  EXPECT_THAT(r.out, HasSubstr("applied 0005_roles.sql"));
  r = RunProcess({FleetwaveBinary(), "migrate", "--status"}, env);
  EXPECT_THAT(r.out, HasSubstr("applied"));
  EXPECT_THAT(r.out, testing::Not(HasSubstr("pending")));
  // The application's role reads the status too (schema_migrations is readable), and runs the
  // CLI on the schema the owner made.
  r = RunProcess({FleetwaveBinary(), "migrate", "--status"}, {{"FLEETWAVE_DB", fresh.conninfo()}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, testing::Not(HasSubstr("pending")));
  r = RunProcess(
      {FleetwaveBinary(), "device", "add", "r1", "--model", "arm", "--firmware", "1.0.0"},
      {{"FLEETWAVE_DB", fresh.conninfo()}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// An explicit --db is used as given; otherwise FLEETWAVE_DB_OWNER beats FLEETWAVE_DB.
TEST_F(CliTest, MigrateConnectsAsTheOwner) {
  TestDatabase fresh(/*migrate=*/false);
  const std::string nowhere = "postgresql://fleetwave@127.0.0.1:1/nowhere";
  ProcessResult r =
      RunProcess({FleetwaveBinary(), "migrate"},
                 {{"FLEETWAVE_DB", fresh.owner_conninfo()}, {"FLEETWAVE_DB_OWNER", nowhere}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("127.0.0.1:1/nowhere")) << "FLEETWAVE_DB_OWNER comes first";
  r = RunProcess({FleetwaveBinary(), "--db", fresh.owner_conninfo(), "migrate"},
                 {{"FLEETWAVE_DB", nowhere}, {"FLEETWAVE_DB_OWNER", nowhere}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("applied 0001_init.sql"));
}

// The application's role may not change the schema: migrate says which role to use.
TEST_F(CliTest, MigrateAsTheApplicationRoleIsRefusedWithAHint) {
  TestDatabase fresh(/*migrate=*/false);
  if (!fresh.has_app_role()) GTEST_SKIP() << "FLEETWAVE_DB_OWNER is not set: one role only";
  ProcessResult r =
      RunProcess({FleetwaveBinary(), "migrate"}, {{"FLEETWAVE_DB", fresh.conninfo()}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot migrate as role fleetwave_controller"));
  EXPECT_THAT(r.err, HasSubstr("permission denied"));
  EXPECT_THAT(r.err, HasSubstr("set FLEETWAVE_DB_OWNER or --db to the owner's connection"));
}

TEST_F(CliTest, MigrateRefusesATamperedHistory) {
  {
    auto conn = database_.ConnectOwner();
    pqxx::work txn(*conn);
    txn.exec("update fleetwave.schema_migrations set checksum = 'tampered' where version = 1");
    txn.commit();
  }
  ProcessResult r = Run({"migrate"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("0001_init.sql was changed after it was applied"));
}

TEST_F(CliTest, DeviceAddShowAndList) {
  EXPECT_THAT(Ok({"device", "add", "robot-1", "--model", "arm", "--firmware", "1.4.2", "--ring",
                  "canary", "--attr", "site=lyon", "--attr", "row=3"}),
              HasSubstr("added device robot-1"));
  Ok({"device", "add", "robot-2", "--model", "leg", "--firmware", "2.0.0"});
  std::string shown = Ok({"device", "show", "robot-1"});
  EXPECT_THAT(shown, HasSubstr("canary"));
  EXPECT_THAT(shown, HasSubstr("\"site\":\"lyon\""));
  auto json = nlohmann::json::parse(Ok({"device", "show", "robot-1", "--json"}));
  EXPECT_EQ(json["attributes"]["row"], "3");
  std::string list = Ok({"device", "list"});
  EXPECT_THAT(list, HasSubstr("robot-1"));
  EXPECT_THAT(list, HasSubstr("robot-2"));
  auto arms = nlohmann::json::parse(Ok({"device", "list", "--model", "arm", "--json"}));
  ASSERT_EQ(arms.size(), 1u);
  EXPECT_EQ(arms[0]["id"], "robot-1");
  EXPECT_EQ(nlohmann::json::parse(Ok({"device", "list", "--model", "none", "--json"})).size(), 0u);
}

TEST_F(CliTest, DeviceAddRefusesEachBadValue) {
  Usage({"device", "add", "a/b", "--model", "arm", "--firmware", "1.0.0"},
        {"device id \"a/b\"", "A-Z a-z 0-9"});
  Usage({"device", "add", "a$b", "--model", "arm", "--firmware", "1.0.0"}, {"device id"});
  Usage({"device", "add", std::string(129, 'x'), "--model", "arm", "--firmware", "1.0.0"},
        {"1 to 128"});
  Usage({"device", "add", "r1", "--model", "a rm", "--firmware", "1.0.0"}, {"model \"a rm\""});
  Usage({"device", "add", "r1", "--model", "arm", "--firmware", "1.0"},
        {"firmware \"1.0\"", "MAJOR.MINOR.PATCH"});
  Usage({"device", "add", "r1", "--model", "arm", "--firmware", "1.0.0", "--ring", "a/b"},
        {"ring \"a/b\""});
  Usage({"device", "add", "r1", "--model", "arm", "--firmware", "1.0.0", "--attr", "novalue"},
        {"--attr \"novalue\"", "KEY=VALUE"});
  Usage({"device", "add", "r1", "--model", "arm"}, {"--firmware"});
  Usage({"device", "show", "a/b"}, {"device id"});
  EXPECT_EQ(Devices(), 0);
}

TEST_F(CliTest, DuplicateDeviceAndUnknownDeviceAreRuntimeErrors) {
  Ok({"device", "add", "r1", "--model", "arm", "--firmware", "1.0.0"});
  ProcessResult r = Run({"device", "add", "r1", "--model", "arm", "--firmware", "1.0.0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("device r1 already exists"));
  r = Run({"device", "show", "r9"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("there is no device r9"));
}

TEST_F(CliTest, ImportFromFileAndStdin) {
  std::string path = ::testing::TempDir() + "/fleet.csv";
  std::ofstream(path) << "id,model,firmware,ring\nf1,arm,1.0.0,canary\nf2,arm,1.0.0,\n";
  EXPECT_THAT(Ok({"device", "import", path}), HasSubstr("imported 2 devices"));
  EXPECT_THAT(Ok({"device", "import", "-"}, "id,model,firmware\ns1,leg,3.0.0\n"),
              HasSubstr("imported 1 devices"));
  EXPECT_EQ(Devices(), 3);
}

TEST_F(CliTest, ImportWithBadRowsListsThemAndImportsNothing) {
  std::string csv = "id,model,firmware\nok1,arm,1.0.0\nbad/1,arm,1.0.0\nok1,arm,1.0.0\n";
  for (int i = 0; i < 30; ++i) csv += "x" + std::to_string(i) + ",arm,nope\n";
  ProcessResult r = Run({"device", "import", "-"}, csv);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("nothing was imported: 31 bad row(s)"));
  EXPECT_THAT(r.err, HasSubstr("line 3: device id \"bad/1\""));
  EXPECT_THAT(r.err, HasSubstr("line 5: firmware \"nope\""));
  EXPECT_THAT(r.err, HasSubstr("... and 11 more"));
  EXPECT_EQ(Devices(), 0);
  // Once the malformed rows are fixed, the duplicate on line 4 is what remains.
  r = Run({"device", "import", "-"}, "id,model,firmware\nok1,arm,1.0.0\nok1,arm,1.0.0\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("line 3: device id \"ok1\" appears again (first on line 2)"));
  EXPECT_EQ(Devices(), 0);
}

TEST_F(CliTest, ImportOfAMissingFileIsAUsageError) {
  Usage({"device", "import", "/nonexistent/fleet.csv"}, {"cannot open /nonexistent/fleet.csv"});
}

TEST_F(CliTest, ReleaseAddListHaltResume) {
  EXPECT_THAT(Ok({"release", "add", "--model", "arm", "--version", "1.10.0", "--url",
                  "https://fw.example.com/arm/1.10.0.bin", "--sha256", sha_, "--size", "1024"}),
              HasSubstr("added release arm 1.10.0"));
  Ok({"release", "add", "--model", "arm", "--version", "1.9.0", "--url", "https://fw/1.9.0",
      "--sha256", sha_, "--size", "1"});
  auto json = nlohmann::json::parse(Ok({"release", "list", "--json"}));
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["version"], "1.10.0");  // semver order, not text order
  EXPECT_EQ(json[0]["state"], "active");
  EXPECT_EQ(json[0]["size"], 1024);
  EXPECT_THAT(Ok({"release", "list"}), HasSubstr("1.9.0"));
  EXPECT_THAT(Ok({"release", "halt", "--model", "arm", "--version", "1.10.0"}),
              HasSubstr("halted (was active)"));
  EXPECT_THAT(Ok({"release", "resume", "--model", "arm", "--version", "1.10.0"}),
              HasSubstr("active (was halted)"));
  ProcessResult r = Run({"release", "halt", "--model", "arm", "--version", "7.0.0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("there is no release arm 7.0.0"));
  r = Run({"release", "add", "--model", "arm", "--version", "1.9.0", "--url", "https://fw/x",
           "--sha256", sha_, "--size", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("release arm 1.9.0 already exists"));
}

TEST_F(CliTest, ReleaseAddRefusesEachBadValue) {
  auto add = [&](std::string version, std::string url, std::string sha, std::string size) {
    return std::vector<std::string>{"release", "add", "--model",  "arm", "--version", version,
                                    "--url",   url,   "--sha256", sha,   "--size",    size};
  };
  Usage(add("1.0", "https://fw/x", sha_, "1"), {"version \"1.0\"", "semantic version"});
  Usage(add("1.0.0", "ftp://fw/x", sha_, "1"), {"url \"ftp://fw/x\"", "http:// or https://"});
  Usage(add("1.0.0", "https://fw/x", "abc", "1"), {"sha256 \"abc\"", "64 lowercase hex"});
  Usage(add("1.0.0", "https://fw/x", sha_, "0"), {"size 0", "above 0"});
  Usage(add("1.0.0", "https://fw/x", sha_, "-3"), {"size"});
  Usage(add("1.0.0", "https://fw/x", sha_, "ten"), {"--size"});
  Usage({"release", "halt", "--model", "arm", "--version", "x"}, {"version \"x\""});
  auto conn = database_.Connect();
  pqxx::read_transaction txn(*conn);
  EXPECT_EQ(txn.exec1("select count(*) from fleetwave.releases")[0].as<int>(), 0);
}

// ---- keys and signed releases (issue 7)

// A fresh directory of its own under the test temp dir.
std::string FreshDir(const std::string& name) {
  std::string dir =
      ::testing::TempDir() + "/fleetwave-cli-" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST_F(CliTest, KeysGenerateWritesAPrivateSecretKeyAndNeverOverwrites) {
  const std::string dir = FreshDir("keys");
  std::string out = Ok({"keys", "generate", "--out", dir + "/release"});
  EXPECT_THAT(out, testing::MatchesRegex("key [0-9a-f]{16}: secret .*release.key \\(mode 0600\\), "
                                         "public .*release.pub\n"));
  struct stat st {};
  ASSERT_EQ(stat((dir + "/release.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(ReadFile(dir + "/release.pub"), HasSubstr("fleetwave-ed25519-public-v1 "));
  // The secret key is not printed.
  const std::string secret = ReadFile(dir + "/release.key");
  EXPECT_THAT(out, testing::Not(HasSubstr(secret.substr(secret.find(' ') + 1, 20))));
  Usage({"keys", "generate", "--out", dir + "/release"}, {"already exists", "never overwritten"});
  EXPECT_EQ(ReadFile(dir + "/release.key"), secret);
  Usage({"keys", "generate", "--out", dir + "/"}, {"--out", "must name a file prefix"});
  Usage({"keys", "generate", "--out", dir + "/no/such/dir/k"}, {"--out"});
}

TEST_F(CliTest, ReleaseSignThenAddWithTheSignatureVerified) {
  const std::string dir = FreshDir("sign");
  Ok({"keys", "generate", "--out", dir + "/release"});
  Ok({"keys", "generate", "--out", dir + "/other"});
  auto manifest = [&](std::string size, std::string counter = "15") {
    return std::vector<std::string>{"--model",          "arm",      "--version", "1.5.0",  "--url",
                                    "https://fw/a.bin", "--sha256", sha_,        "--size", size,
                                    "--counter",        counter};
  };
  auto with = [](std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  std::string signature =
      Ok(with({"release", "sign", "--key", dir + "/release.key"}, manifest("1024")));
  ASSERT_FALSE(signature.empty());
  signature.pop_back();  // the newline
  EXPECT_THAT(signature, testing::MatchesRegex("[0-9a-f]{16}:[A-Za-z0-9+/]{86}=="));

  // Refused, and nothing registered: a manifest that differs from the signed one, another key,
  // a malformed signature, a key file others may read, --verify-key without a signature.
  Usage(with(with({"release", "add"}, manifest("1025")),
             {"--signature", signature, "--verify-key", dir + "/release.pub"}),
        {"--signature does not verify"});
  Usage(with(with({"release", "add"}, manifest("1024")),
             {"--signature", signature, "--verify-key", dir + "/other.pub"}),
        {"not by", "other.pub"});
  Usage(with(with({"release", "add"}, manifest("1024")), {"--signature", "abc"}),
        {"--signature", "KEYID:VALUE"});
  Usage(with(with({"release", "add"}, manifest("1024")), {"--verify-key", dir + "/release.pub"}),
        {"--verify-key needs --signature"});
  Usage(with(with({"release", "add"}, manifest("1024")), {"--counter", "-1"}), {"counter"});
  Usage(with({"release", "sign", "--key", dir + "/release.key"}, manifest("1024", "0")),
        {"--counter must be at least 1 for a signed release"});
  Usage(with(with({"release", "add"}, manifest("1024", "0")), {"--signature", signature}),
        {"--counter must be at least 1 for a signed release"});
  chmod((dir + "/other.key").c_str(), 0640);
  Usage(with({"release", "sign", "--key", dir + "/other.key"}, manifest("1024")),
        {"--key", "other.key"});
  Usage(with({"release", "sign", "--key", dir + "/none.key"}, manifest("1024")), {"--key"});
  {
    auto conn = database_.Connect();
    pqxx::read_transaction txn(*conn);
    EXPECT_EQ(txn.exec1("select count(*) from fleetwave.releases")[0].as<int>(), 0);
  }

  EXPECT_THAT(
      Ok(with(with({"release", "add"}, manifest("1024")),
              {"--signature", signature, "--verify-key", dir + "/release.pub"})),
      HasSubstr("added release arm 1.5.0 (active, signed by key " + signature.substr(0, 16) + ")"));
  auto json = nlohmann::json::parse(Ok({"release", "list", "--json"}));
  ASSERT_EQ(json.size(), 1u);
  EXPECT_EQ(json[0]["counter"], 15);
  EXPECT_EQ(json[0]["signature"]["keyId"], signature.substr(0, 16));
  EXPECT_EQ(json[0]["signature"]["value"], signature.substr(17));
  EXPECT_EQ(json[0]["signature"]["alg"], "ed25519");
}

TEST_F(CliTest, SimulateTrustFlagsAreCheckedBeforeAnythingRuns) {
  const std::string dir = FreshDir("trust");
  Ok({"keys", "generate", "--out", dir + "/release"});
  Usage({"simulate", "--trust-release-key", dir + "/release.pub"},
        {"give both --trust-release-key and --trust-notice-key"});
  Usage({"simulate", "--trust-release-key", dir + "/release.pub", "--trust-notice-key",
         dir + "/missing.pub"},
        {"--trust-notice-key", "missing.pub"});
  Usage({"simulate", "--trust-release-key", dir + "/release.key", "--trust-notice-key",
         dir + "/release.pub"},
        {"--trust-release-key"});  // a secret key file is no public key file
}

// `fleetwave controller` checks its flags and its plan before it contacts anything. The database
// given is unreachable: a check that let a bad value through ends in exit 1 (the unreachable
// address), not in a controller that runs forever.
class ControllerFlagsTest : public ::testing::Test {
 protected:
  static constexpr const char* kNowhere = "postgresql://fleetwave@127.0.0.1:1/fleetwave";

  ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {FleetwaveBinary(), "controller"});
    return RunProcess(args, {{"FLEETWAVE_DB", kNowhere}, {"FLEETWAVE_MQTT", "tcp://127.0.0.1:1"}});
  }
  void Usage(const std::vector<std::string>& args, std::initializer_list<std::string> parts) {
    ProcessResult r = Run(args);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    for (const std::string& p : parts) EXPECT_THAT(r.err, HasSubstr(p));
    EXPECT_THAT(r.err, testing::Not(HasSubstr("cannot connect")));
  }
  // Writes `text` to a file of its own and returns its path.
  std::string PlanFile(const std::string& name, const std::string& text) {
    std::string path = ::testing::TempDir() + "/fleetwave-cli-" + name + ".json";
    std::ofstream(path) << text;
    return path;
  }
};

TEST_F(ControllerFlagsTest, AMissingPlanFileIsAUsageError) {
  const std::string path = ::testing::TempDir() + "/fleetwave-cli-no-such-plan.json";
  std::remove(path.c_str());
  Usage({"--plan", path}, {"--plan", path, "cannot read"});
  Usage({"--plan", ::testing::TempDir()}, {"--plan"});  // a directory is no plan either
}

TEST_F(ControllerFlagsTest, APlanThatIsNotJsonIsAUsageError) {
  const std::string path = PlanFile("not-json", "{\"waves\": [");
  Usage({"--plan", path}, {"--plan", path});
  Usage({"--plan", PlanFile("empty", "")}, {"--plan"});
  Usage({"--plan", PlanFile("array", "[]")}, {"--plan"});
}

TEST_F(ControllerFlagsTest, AnUnknownPlanFieldIsAUsageErrorNamingIt) {
  const std::string path = PlanFile("unknown-field", R"({"wavez": []})");
  Usage({"--plan", path}, {"--plan", path, "unknown field wavez"});
  Usage({"--plan", PlanFile("unknown-nested", R"({"waves": [{"percent": 100, "precent": 1}]})")},
        {"unknown field waves[0].precent"});
}

TEST_F(ControllerFlagsTest, ABadPlanValueIsAUsageErrorNamingTheField) {
  const std::string path = PlanFile("last-wave", R"({"waves": [{"percent": 50}]})");
  Usage({"--plan", path}, {"--plan", path, "waves[0].percent", "100", "50"});
  Usage({"--plan", PlanFile("falling", R"({"waves": [{"percent": 10}, {"percent": 5}]})")},
        {"waves[1].percent"});
}

TEST_F(ControllerFlagsTest, OutOfRangeFlagsAreUsageErrors) {
  Usage({"--lease-ttl", "1"}, {"--lease-ttl"});
  Usage({"--lease-ttl", "601"}, {"--lease-ttl"});
  Usage({"--lease-ttl", "ten"}, {"--lease-ttl"});
  Usage({"--reconcile-interval-ms", "49"}, {"--reconcile-interval-ms"});
  Usage({"--topic-root", "fleet/+"}, {"topic root \"fleet/+\""});
  Usage({"--topic-root", "fleet/"}, {"topic root \"fleet/\""});
}

TEST_F(ControllerFlagsTest, AMalformedHttpAddressIsAUsageError) {
  Usage({"--http", "localhost"}, {"--http \"localhost\" is invalid: use HOST:PORT"});
  Usage({"--http", "127.0.0.1:99999"}, {"--http \"127.0.0.1:99999\" is invalid"});
}

TEST_F(ControllerFlagsTest, ANoticeKeyMustBeAPrivateWellFormedSecretKey) {
  const std::string dir = FreshDir("notice");
  ASSERT_EQ(RunProcess({FleetwaveBinary(), "keys", "generate", "--out", dir + "/notice"}).exit_code,
            0);
  Usage({"--notice-key", dir + "/missing.key"}, {"--notice-key", "missing.key"});
  Usage({"--notice-key", dir + "/notice.pub"}, {"--notice-key", "notice.pub"});
  ASSERT_EQ(chmod((dir + "/notice.key").c_str(), 0644), 0);
  Usage({"--notice-key", dir + "/notice.key"}, {"--notice-key", "notice.key"});
  ASSERT_EQ(chmod((dir + "/notice.key").c_str(), 0600), 0);
  // The control: a good key gets as far as the (unreachable) database.
  ProcessResult r = Run({"--notice-key", dir + "/notice.key"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot connect to PostgreSQL"));
}

// The broker: TLS settings that do not fit the URI, and plain TCP without --plain-tcp, are usage
// errors naming the flag; with --plain-tcp the controller says loudly what it means.
TEST_F(ControllerFlagsTest, BrokerSecurityFlagsAreChecked) {
  auto run = [](std::vector<std::string> args, std::map<std::string, std::string> env) {
    args.insert(args.begin(), FleetwaveBinary());
    env.emplace("FLEETWAVE_DB", kNowhere);
    return RunProcess(args, env);
  };
  for (const char* command : {"controller", "simulate"}) {
    ProcessResult r =
        run({command}, {{"FLEETWAVE_MQTT", "tcp://127.0.0.1:1"}, {"FLEETWAVE_PLAIN_TCP", ""}});
    EXPECT_EQ(r.exit_code, 2) << command << r.err;
    EXPECT_THAT(r.err, HasSubstr("is plain TCP: unencrypted"));
    EXPECT_THAT(r.err, HasSubstr("--plain-tcp"));
    r = run({command, "--tls-ca", "/etc/hostname"}, {{"FLEETWAVE_MQTT", "tcp://127.0.0.1:1"}});
    EXPECT_EQ(r.exit_code, 2) << command << r.err;
    EXPECT_THAT(r.err, HasSubstr("use ssl://HOST:PORT"));
    r = run({command}, {{"FLEETWAVE_MQTT", "ssl://127.0.0.1:1"}, {"FLEETWAVE_PLAIN_TCP", ""}});
    EXPECT_EQ(r.exit_code, 2) << command << r.err;
    EXPECT_THAT(r.err, HasSubstr("--tls-ca"));
    r = run({command, "--tls-ca", "/etc/hostname", "--tls-cert", "/etc/hostname"},
            {{"FLEETWAVE_MQTT", "ssl://127.0.0.1:1"}, {"FLEETWAVE_PLAIN_TCP", ""}});
    EXPECT_EQ(r.exit_code, 2) << command << r.err;
    EXPECT_THAT(r.err, HasSubstr("--tls-key"));
  }
  // A TLS key others may read is refused like every secret key file.
  const std::string dir = FreshDir("tls-key");
  const std::string key = dir + "/client.key";
  std::ofstream(key) << "-----BEGIN PRIVATE KEY-----\n";
  ASSERT_EQ(chmod(key.c_str(), 0644), 0);
  ProcessResult refused = run(
      {"controller", "--tls-ca", "/etc/hostname", "--tls-cert", "/etc/hostname", "--tls-key", key},
      {{"FLEETWAVE_MQTT", "ssl://127.0.0.1:1"}, {"FLEETWAVE_PLAIN_TCP", ""}});
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("--tls-key"));
  EXPECT_THAT(refused.err, HasSubstr("chmod 600"));
  // Accepted: plain TCP with the flag gets as far as the database, and says what it means.
  ProcessResult r = run({"controller", "--plain-tcp"},
                        {{"FLEETWAVE_MQTT", "tcp://127.0.0.1:1"}, {"FLEETWAVE_PLAIN_TCP", ""}});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("PLAIN TCP to the broker at tcp://127.0.0.1:1"));
  EXPECT_THAT(r.err, HasSubstr("cannot connect to PostgreSQL"));
}

TEST_F(ControllerFlagsTest, AValidPlanGetsAsFarAsTheDatabase) {
  // The control for the tests above: with nothing wrong, the controller tries to connect.
  const std::string path = PlanFile("valid", R"({"waves": [{"percent": 10}, {"percent": 100}]})");
  ProcessResult r = Run({"--plan", path, "--lease-ttl", "2"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot connect to PostgreSQL at 127.0.0.1:1/fleetwave"));
}

// --log-format and --log-level: global flags, also from the environment, checked before the
// command runs.
TEST_F(ControllerFlagsTest, BadLogFlagsAreUsageErrorsNamingTheAllowedValues) {
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"controller"}, {"device", "list"}}) {
    std::vector<std::string> argv = {FleetwaveBinary(), "--log-format", "xml"};
    argv.insert(argv.end(), cmd.begin(), cmd.end());
    ProcessResult r = RunProcess(argv);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("--log-format"));
    EXPECT_THAT(r.err, HasSubstr("\"xml\""));
    EXPECT_THAT(r.err, HasSubstr("text or json"));
  }
  ProcessResult r = RunProcess({FleetwaveBinary(), "--log-level", "loud", "device", "list"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--log-level"));
  EXPECT_THAT(r.err, HasSubstr("trace, debug, info, warn, error or off"));
  // From the environment too, named by its variable.
  r = RunProcess({FleetwaveBinary(), "device", "list"}, {{"FLEETWAVE_LOG_FORMAT", "yaml"}});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("FLEETWAVE_LOG_FORMAT"));
  EXPECT_THAT(r.err, HasSubstr("text or json"));
  r = RunProcess({FleetwaveBinary(), "device", "list"}, {{"FLEETWAVE_LOG_LEVEL", "warning"}});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("FLEETWAVE_LOG_LEVEL"));
  // Good values get as far as the database.
  r = RunProcess(
      {FleetwaveBinary(), "--log-format", "json", "--log-level", "debug", "device", "list"},
      {{"FLEETWAVE_DB", kNowhere}});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  // With JSON logs, even the fatal error is a JSON line.
  nlohmann::json line = nlohmann::json::parse(r.err);
  EXPECT_EQ(line["level"], "error");
  EXPECT_THAT(line["msg"].get<std::string>(), HasSubstr("cannot connect"));
}

// A controller run with --log-format json: every stderr line is a JSON object, and each state
// change carries its ids as fields.
TEST_F(CliTest, AJsonLogRunEmitsOneParseableObjectPerLine) {
  {
    auto conn = database_.Connect();
    db::Registry registry(*conn);
    registry.AddDevice({"j1", "m1", "1.0.0", "default", {}});
    registry.AddRelease({"m1", "2.0.0", "https://fw.example/m1-2.0.0.bin", std::string(64, 'a'),
                         1000, fleet::ReleaseState::kActive});
  }
  const std::string unique = std::to_string(getpid());
  const std::string log = ::testing::TempDir() + "json-log-" + unique + ".log";
  std::remove(log.c_str());
  testing_support::BackgroundProcess controller(
      {FleetwaveBinary(), "--log-format", "json", "controller", "--http", "127.0.0.1:0",
       "--lease-ttl", "2", "--reconcile-interval-ms", "100", "--topic-root",
       "fwtest/json-" + unique + "/things", "--client-id", "fw-json-" + unique},
      {{"FLEETWAVE_DB", database_.conninfo()}, {"FLEETWAVE_MQTT", testing_support::BrokerUri()}},
      log);
  auto read_log = [&] { return ReadFile(log); };
  // The first wave starting is a state change with a rollout and a wave.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (read_log().find("\"event\":\"wave_started\"") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  controller.Signal(SIGTERM);
  EXPECT_EQ(controller.Wait(20000), 0);

  std::istringstream lines(read_log());
  int parsed = 0;
  bool wave_change = false, cycle_change = false;
  for (std::string line; std::getline(lines, line);) {
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(line)) << line;
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_TRUE(j["ts"].is_string()) << line;
    EXPECT_TRUE(j["level"].is_string()) << line;
    EXPECT_TRUE(j["msg"].is_string()) << line;
    ++parsed;
    if (j.value("event", "") == "wave_started" && j.contains("wave")) {
      wave_change = true;
      EXPECT_EQ(j["rollout"], "fw-m1-2.0.0-c1") << line;
      EXPECT_EQ(j["cycle"], 1) << line;
      EXPECT_EQ(j["wave"], 1) << line;
      EXPECT_EQ(j["from"], "pending") << line;
      EXPECT_EQ(j["to"], "running") << line;
      EXPECT_EQ(j["level"], "info") << line;
    }
    if (j.value("event", "") == "cycle_started") cycle_change = j["cycle"].is_number();
  }
  EXPECT_GT(parsed, 3);
  EXPECT_TRUE(wave_change) << read_log();
  EXPECT_TRUE(cycle_change) << read_log();
}

// The controller as operators run it serves its HTTP side: health, readiness as the leader,
// metrics with the leader flag and the database up, and the status API.
TEST_F(CliTest, AControllerServesHealthReadinessMetricsAndTheApi) {
  const std::string unique = std::to_string(getpid());
  const std::string log = ::testing::TempDir() + "http-" + unique + ".log";
  std::remove(log.c_str());
  testing_support::BackgroundProcess controller(
      {FleetwaveBinary(), "controller", "--http", "127.0.0.1:0", "--lease-ttl", "2",
       "--reconcile-interval-ms", "100", "--topic-root", "fwtest/http-" + unique + "/things",
       "--client-id", "fw-http-" + unique},
      {{"FLEETWAVE_DB", database_.conninfo()}, {"FLEETWAVE_MQTT", testing_support::BrokerUri()}},
      log);
  auto read_log = [&] { return ReadFile(log); };
  // Port 0: the controller logs the one it got.
  const std::string marker = "http: serving on http://127.0.0.1:";
  int port = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (port == 0 && std::chrono::steady_clock::now() < deadline) {
    const std::string text = read_log();
    if (auto at = text.find(marker); at != std::string::npos)
      port = std::atoi(text.c_str() + at + marker.size());
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(port, 0) << read_log();
  httplib::Client http("127.0.0.1", port);
  auto healthz = http.Get("/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(healthz->status, 200);
  // Ready as the leader once it holds the lease.
  std::string readyz;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = http.Get("/readyz");
    if (r && r->status == 200 && r->body.find("\"leader\"") != std::string::npos) {
      readyz = r->body;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_THAT(readyz, HasSubstr("\"database\": \"ok\"")) << read_log();
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("\nfleetwave_leader 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("\nfleetwave_database_up 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("# TYPE fleetwave_jobs_requests_total counter"));
  auto status = http.Get("/api/v1/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
  EXPECT_EQ(nlohmann::json::parse(status->body)["leader"]["holder"].is_string(), true);
  controller.Signal(SIGTERM);
  EXPECT_EQ(controller.Wait(20000), 0);
}

}  // namespace
