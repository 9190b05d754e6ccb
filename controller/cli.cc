#include "controller/cli.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "controller/cli_common.h"
#include "controller/logging.h"
#include "db/connection.h"
#include "db/migrator.h"
#include "db/registry.h"
#include "fleet/registry.h"
#include "fleet/signed_manifest.h"
#include "signing/key_file.h"
#include "signing/signing.h"

namespace controller {

using Json = nlohmann::json;

std::unique_ptr<pqxx::connection> OpenDatabase(const Globals& g) {
  if (g.db.empty()) {
    throw UsageError(
        "no database given: set --db or FLEETWAVE_DB to a libpq connection string or URI, e.g. "
        "postgresql://fleetwave@127.0.0.1:5432/fleetwave (`scripts/stack env` prints the local "
        "stack's)");
  }
  return db::Connect(g.db);
}

void CheckBrokerSecurity(const Globals& g, const char* command) {
  const bool tls = g.mqtt.starts_with("ssl://") || g.mqtt.starts_with("mqtts://");
  const bool any_file = !g.tls_ca.empty() || !g.tls_cert.empty() || !g.tls_key.empty();
  if (tls) {
    if (g.tls_ca.empty())
      throw UsageError("--mqtt " + g.mqtt +
                       " is TLS: give --tls-ca (FLEETWAVE_TLS_CA), the CA certificate that signed "
                       "the broker's");
    if (g.tls_cert.empty() != g.tls_key.empty())
      throw UsageError(
          "give both --tls-cert and --tls-key (the client certificate and its key), "
          "or neither");
    if (g.plain_tcp) throw UsageError("--plain-tcp contradicts --mqtt " + g.mqtt + " (TLS)");
    if (!g.tls_key.empty()) {
      try {  // the same refusal as for every secret key file: readable only by its owner
        std::string key = signing::ReadKeyFile(g.tls_key, /*secret=*/true, 64 * 1024);
        OPENSSL_cleanse(key.data(), key.size());
      } catch (const signing::KeyFileError& err) {
        throw UsageError(std::string("--tls-key: ") + err.what());
      }
    }
    return;
  }
  if (any_file)
    throw UsageError("--tls-ca/--tls-cert/--tls-key are given but --mqtt " + g.mqtt +
                     " is plain TCP: use ssl://HOST:PORT");
  if (!g.plain_tcp)
    throw UsageError("--mqtt " + g.mqtt +
                     " is plain TCP: unencrypted, and the broker cannot tell who is who. Use "
                     "ssl://HOST:PORT with --tls-ca, --tls-cert and --tls-key (README "
                     "\"Security\"), or pass --plain-tcp (FLEETWAVE_PLAIN_TCP=1) to accept that");
  spdlog::warn(
      "{}: PLAIN TCP to the broker at {}: traffic is unencrypted and any client can claim to be "
      "any device or the controller; use TLS (ssl://) outside a development machine",
      command, g.mqtt);
}

namespace {

std::string OrDash(const std::optional<std::string>& s) { return s ? *s : "-"; }

Json ToJson(const db::DeviceRecord& r) {
  return Json{{"id", r.device.id},
              {"model", r.device.model},
              {"firmware", r.device.firmware},
              {"ring", r.device.ring},
              {"attributes", r.device.attributes},
              {"lastSeen", r.last_seen ? Json(*r.last_seen) : Json(nullptr)},
              {"quarantined", r.quarantined},
              {"createdAt", r.created_at}};
}

Json ToJson(const db::ReleaseRecord& r) {
  return Json{
      {"id", r.id},
      {"model", r.release.model},
      {"version", r.release.version},
      {"url", r.release.url},
      {"sha256", r.release.sha256},
      {"size", r.release.size},
      {"counter", r.release.counter},
      {"signature", r.release.signature ? fleet::ToJson(*r.release.signature) : Json(nullptr)},
      {"state", fleet::ToString(r.release.state)},
      {"createdAt", r.created_at}};
}

}  // namespace

// ---- migrate ---------------------------------------------------------------------------------

// Migrations run as the schema's owner, the controller and the CLI as the application's role
// (README "Database roles"). An explicit --db wins; otherwise FLEETWAVE_DB_OWNER, when set, is
// preferred to FLEETWAVE_DB. CLI11 fills --db from FLEETWAVE_DB itself, so a --db that differs
// from that variable's value is one given on the command line.
namespace {
std::string MigrationConninfo(const Globals& g, std::string* source) {
  const char* app_env = std::getenv("FLEETWAVE_DB");
  const char* owner_env = std::getenv("FLEETWAVE_DB_OWNER");
  bool db_flag_given = !g.db.empty() && (!app_env || g.db != app_env);
  if (!db_flag_given && owner_env && *owner_env) {
    *source = "FLEETWAVE_DB_OWNER";
    return owner_env;
  }
  *source = db_flag_given ? "--db" : "FLEETWAVE_DB";
  return g.db;
}
}  // namespace

void AddMigrate(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("migrate", "Apply the pending schema migrations");
  cmd->footer(
      "Migrations are built into the binary and forward-only; concurrent runs are safe.\n"
      "They run as the role that owns the database and the schema, not as the application's\n"
      "role: migrate connects with --db when given, else with FLEETWAVE_DB_OWNER when set, else\n"
      "with FLEETWAVE_DB. Migration 0005 needs the group role fleetwave_app: it creates it when\n"
      "the owner may create roles, otherwise a superuser runs once\n"
      "  CREATE ROLE fleetwave_app NOLOGIN;\n"
      "Example:\n"
      "  fleetwave migrate           # with FLEETWAVE_DB_OWNER=postgresql://fleetwave@host/db\n"
      "  fleetwave --db postgresql://fleetwave@127.0.0.1:5432/fleetwave migrate --status");
  auto status = std::make_shared<bool>(false);
  cmd->add_flag("--status", *status, "List the migrations and whether each is applied");
  cmd->callback([&g, status] {
    std::string source;
    Globals owner = g;
    owner.db = MigrationConninfo(g, &source);
    auto conn = OpenDatabase(owner);
    spdlog::debug("migrate: connecting to {} (from {})", db::DescribeTarget(owner.db), source);
    db::Migrator migrator(*conn);
    if (*status) {
      std::printf("%-7s %-32s %-8s %s\n", "VERSION", "NAME", "STATE", "APPLIED_AT");
      for (const auto& s : migrator.Status()) {
        std::printf("%-7d %-32s %-8s %s\n", s.migration.version, s.migration.name.c_str(),
                    s.applied_at ? "applied" : "pending", OrDash(s.applied_at).c_str());
      }
      return;
    }
    std::vector<std::string> applied = migrator.Apply();
    for (const auto& name : applied) std::printf("applied %s\n", name.c_str());
    std::printf("database is up to date (%zu migrations, %zu applied now)\n",
                db::EmbeddedMigrations().size(), applied.size());
  });
}

// ---- device ----------------------------------------------------------------------------------

void AddDevice(CLI::App& parent, Globals& g) {
  auto* device = parent.add_subcommand("device", "Register and inspect devices");
  device->require_subcommand(1);

  {
    auto* cmd = device->add_subcommand("add", "Register one device");
    cmd->footer(
        "Example:\n  fleetwave device add robot-0001 --model arm-v2 --firmware 1.4.2 "
        "--ring canary --attr site=lyon");
    auto d = std::make_shared<fleet::Device>();
    auto attrs = std::make_shared<std::vector<std::string>>();
    cmd->add_option("id", d->id, "Device id (thing name): 1-128 of A-Z a-z 0-9 _ . : -")
        ->required();
    cmd->add_option("--model", d->model, "Hardware model")->required();
    cmd->add_option("--firmware", d->firmware, "Installed firmware, a semantic version")
        ->required();
    cmd->add_option("--ring", d->ring, "Rollout ring; 'canary' devices go first")
        ->capture_default_str();
    cmd->add_option("--attr", *attrs, "Attribute KEY=VALUE (repeatable)");
    cmd->callback([&g, d, attrs] {
      for (const std::string& kv : *attrs) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos)
          throw UsageError("--attr \"" + kv + "\" is invalid: use KEY=VALUE, e.g. site=lyon");
        d->attributes[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      Require(fleet::CheckDevice(*d));
      auto conn = OpenDatabase(g);
      db::Registry(*conn).AddDevice(*d);
      std::printf("added device %s (model %s, firmware %s, ring %s)\n", d->id.c_str(),
                  d->model.c_str(), d->firmware.c_str(), d->ring.c_str());
    });
  }

  {
    auto* cmd = device->add_subcommand("import", "Register many devices from CSV, all or nothing");
    cmd->footer(
        "The CSV header names the columns id,model,firmware and optionally ring.\n"
        "A file with any bad row (malformed, duplicated, already registered) imports nothing\n"
        "and the first 20 bad lines are listed.\n"
        "Example:\n  fleetwave device import fleet.csv\n  generate-fleet | fleetwave device "
        "import -");
    auto file = std::make_shared<std::string>();
    cmd->add_option("file", *file, "CSV file, or - for standard input")->required();
    cmd->callback([&g, file] {
      std::ifstream stream;
      std::istream* in = &std::cin;
      if (*file != "-") {
        stream.open(*file);
        if (!stream) throw UsageError("cannot open " + *file + ": " + std::strerror(errno));
        in = &stream;
      }
      auto conn = OpenDatabase(g);
      const bool tty = isatty(STDERR_FILENO);
      const auto start = std::chrono::steady_clock::now();
      auto seconds = [&start] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      db::ImportReport report = db::Registry(*conn).ImportDevices(*in, [&](int64_t rows) {
        if (tty)
          std::fprintf(stderr, "\rreading: %lld rows (%.0f rows/s)   ",
                       static_cast<long long>(rows), rows / std::max(seconds(), 1e-3));
      });
      if (tty) std::fputc('\n', stderr);
      if (!report.ok()) {
        std::string message =
            "import refused, nothing was imported: " + std::to_string(report.bad_rows) +
            " bad row(s)";
        for (const auto& p : report.problems)
          message += "\n  line " + std::to_string(p.line) + ": " + p.reason;
        if (report.bad_rows > static_cast<int64_t>(report.problems.size()))
          message +=
              "\n  ... and " + std::to_string(report.bad_rows - report.problems.size()) + " more";
        throw db::Error(message);
      }
      double s = seconds();
      std::printf("imported %lld devices in %.1f s (%.0f devices/s)\n",
                  static_cast<long long>(report.imported), s, report.imported / std::max(s, 1e-3));
    });
  }

  {
    auto* cmd = device->add_subcommand("list", "List registered devices");
    cmd->footer("Example:\n  fleetwave device list --model arm-v2\n  fleetwave device list --json");
    auto model = std::make_shared<std::string>();
    cmd->add_option("--model", *model, "Only devices of this model");
    auto json = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json, "A JSON array of device objects");
    cmd->callback([&g, model, json] {
      std::optional<std::string> filter;
      if (!model->empty()) {
        Require(fleet::CheckModel(*model));
        filter = *model;
      }
      auto conn = OpenDatabase(g);
      bool first = true;
      if (*json)
        std::fputs("[", stdout);
      else
        std::printf("%-32s %-16s %-14s %-10s %-20s %s\n", "ID", "MODEL", "FIRMWARE", "RING",
                    "LAST_SEEN", "QUARANTINED");
      db::Registry(*conn).ForEachDevice(filter, [&](const db::DeviceRecord& r) {
        if (*json) {
          std::printf("%s\n%s", first ? "" : ",", ToJson(r).dump().c_str());
        } else {
          std::printf("%-32s %-16s %-14s %-10s %-20s %s\n", r.device.id.c_str(),
                      r.device.model.c_str(), r.device.firmware.c_str(), r.device.ring.c_str(),
                      OrDash(r.last_seen).c_str(), r.quarantined ? "yes" : "no");
        }
        first = false;
      });
      if (*json) std::puts(first ? "]" : "\n]");
    });
  }

  {
    auto* cmd = device->add_subcommand("show", "Show one device");
    cmd->footer("Example:\n  fleetwave device show robot-0001");
    auto id = std::make_shared<std::string>();
    cmd->add_option("id", *id, "Device id")->required();
    auto json = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json, "A JSON object");
    cmd->callback([&g, id, json] {
      Require(fleet::CheckDeviceId(*id));
      auto conn = OpenDatabase(g);
      auto r = db::Registry(*conn).FindDevice(*id);
      if (!r) throw db::NotFound("there is no device " + *id);
      if (*json) {
        std::puts(ToJson(*r).dump(2).c_str());
        return;
      }
      std::printf("id:          %s\nmodel:       %s\nfirmware:    %s\nring:        %s\n",
                  r->device.id.c_str(), r->device.model.c_str(), r->device.firmware.c_str(),
                  r->device.ring.c_str());
      std::printf("attributes:  %s\nlast seen:   %s\nquarantined: %s\ncreated:     %s\n",
                  Json(r->device.attributes).dump().c_str(), OrDash(r->last_seen).c_str(),
                  r->quarantined ? "yes" : "no", r->created_at.c_str());
    });
  }
}

// ---- release ---------------------------------------------------------------------------------

void AddRelease(CLI::App& parent, Globals& g) {
  auto* release = parent.add_subcommand("release", "Publish and control firmware releases");
  release->require_subcommand(1);

  // A signed manifest's counter must be above the factory firmware's (0), or no device installs it.
  auto require_signed_counter = [](const fleet::Release& r) {
    if (r.counter < 1)
      throw UsageError(
          "--counter must be at least 1 for a signed release: devices refuse a manifest whose "
          "counter is not above the one they run (0 for the firmware they shipped with)");
  };
  // The manifest's flags, the same for `add` and `sign`.
  auto manifest_options = [](CLI::App* cmd, fleet::Release& r) {
    cmd->add_option("--model", r.model, "Hardware model")->required();
    cmd->add_option("--version", r.version, "Semantic version, e.g. 1.5.0 or 2.0.0-rc.1")
        ->required();
    cmd->add_option("--url", r.url, "http(s) URL of the image")->required();
    cmd->add_option("--sha256", r.sha256, "SHA-256 of the image, 64 lowercase hex")->required();
    cmd->add_option("--size", r.size, "Image size in bytes")->required();
    cmd->add_option("--counter", r.counter,
                    "Ordering counter of the signed manifest: devices refuse a release whose "
                    "counter is not above the one they run (default 0)");
  };

  {
    auto* cmd = release->add_subcommand("add", "Publish a firmware release (state: active)");
    cmd->footer(
        "A release signed offline (`fleetwave release sign`) carries its signature to the\n"
        "devices, which refuse an image the release key did not sign when they trust release "
        "keys.\n"
        "Example:\n  fleetwave release add --model arm-v2 --version 1.5.0 \\\n"
        "    --url https://firmware.example.com/arm-v2/1.5.0.bin \\\n"
        "    --sha256 $(sha256sum 1.5.0.bin | cut -c1-64) --size $(stat -c %s 1.5.0.bin) \\\n"
        "    --counter 15 --signature \"$(cat 1.5.0.sig)\" --verify-key release.pub");
    auto r = std::make_shared<fleet::Release>();
    manifest_options(cmd, *r);
    auto signature = std::make_shared<std::string>();
    cmd->add_option("--signature", *signature,
                    "The release key's signature of the manifest, KEYID:VALUE as `fleetwave "
                    "release sign` prints it");
    auto verify_key = std::make_shared<std::string>();
    cmd->add_option("--verify-key", *verify_key,
                    "Public release key file: refuse the release unless --signature verifies "
                    "with it");
    cmd->callback([&g, r, signature, verify_key, require_signed_counter] {
      Require(fleet::CheckRelease(*r));
      if (!signature->empty()) {
        std::string error;
        r->signature = fleet::ParseSignature(*signature, &error);
        if (!r->signature) throw UsageError("--signature: " + error);
        require_signed_counter(*r);
      }
      if (!verify_key->empty()) {
        if (!r->signature)
          throw UsageError("--verify-key needs --signature: there is nothing to verify");
        std::optional<signing::PublicKey> key;
        try {
          key = signing::LoadPublicKeyFile(*verify_key);
        } catch (const signing::KeyFileError& err) {
          throw UsageError(std::string("--verify-key: ") + err.what());
        }
        if (key->KeyId() != r->signature->key_id)
          throw UsageError("--signature was made by key " + r->signature->key_id + ", not by " +
                           *verify_key + " (key " + key->KeyId() + ")");
        if (!signing::VerifyRelease(*key, fleet::ManifestOf(*r), r->signature->value))
          throw UsageError(
              "--signature does not verify: the manifest (model, version, counter, url, sha256, "
              "size) differs from the one that was signed");
      }
      auto conn = OpenDatabase(g);
      db::Registry(*conn).AddRelease(*r);
      std::printf("added release %s %s (active, %s)\n", r->model.c_str(), r->version.c_str(),
                  r->signature ? ("signed by key " + r->signature->key_id).c_str() : "unsigned");
    });
  }

  {
    auto* cmd = release->add_subcommand(
        "sign", "Sign a release manifest with the release key (offline: no database)");
    cmd->footer(
        "Prints KEYID:VALUE, the signature to give `fleetwave release add --signature`. Run it\n"
        "where the release key lives (an offline machine), with the exact flags `release add`\n"
        "will get: the signature covers model, version, counter, url, sha256 and size.\n"
        "Example:\n  fleetwave release sign --key release.key --model arm-v2 --version 1.5.0 \\\n"
        "    --url https://firmware.example.com/arm-v2/1.5.0.bin \\\n"
        "    --sha256 $(sha256sum 1.5.0.bin | cut -c1-64) --size $(stat -c %s 1.5.0.bin) \\\n"
        "    --counter 15 > 1.5.0.sig");
    auto r = std::make_shared<fleet::Release>();
    manifest_options(cmd, *r);
    auto key_file = std::make_shared<std::string>();
    cmd->add_option("--key", *key_file, "Secret release key file (fleetwave keys generate)")
        ->required();
    cmd->callback([r, key_file, require_signed_counter] {
      Require(fleet::CheckRelease(*r));
      require_signed_counter(*r);
      std::optional<signing::SecretKey> key;
      try {
        key.emplace(signing::LoadSecretKeyFile(*key_file));
      } catch (const signing::KeyFileError& err) {
        throw UsageError(std::string("--key: ") + err.what());
      }
      const fleet::Signature s{key->KeyId(), signing::SignRelease(*key, fleet::ManifestOf(*r))};
      std::printf("%s\n", fleet::ToText(s).c_str());
    });
  }

  {
    auto* cmd = release->add_subcommand("list", "List releases, newest version first per model");
    cmd->footer("Example:\n  fleetwave release list\n  fleetwave release list --json");
    auto model = std::make_shared<std::string>();
    cmd->add_option("--model", *model, "Only releases of this model");
    auto json = std::make_shared<bool>(false);
    cmd->add_flag("--json", *json, "A JSON array of release objects");
    cmd->callback([&g, model, json] {
      std::optional<std::string> filter;
      if (!model->empty()) {
        Require(fleet::CheckModel(*model));
        filter = *model;
      }
      auto conn = OpenDatabase(g);
      auto releases = db::Registry(*conn).ListReleases(filter);
      if (*json) {
        Json out = Json::array();
        for (const auto& r : releases) out.push_back(ToJson(r));
        std::puts(out.dump(2).c_str());
        return;
      }
      std::printf("%-16s %-14s %-8s %-12s %s\n", "MODEL", "VERSION", "STATE", "SIZE", "URL");
      for (const auto& r : releases) {
        std::printf("%-16s %-14s %-8s %-12lld %s\n", r.release.model.c_str(),
                    r.release.version.c_str(),
                    std::string(fleet::ToString(r.release.state)).c_str(),
                    static_cast<long long>(r.release.size), r.release.url.c_str());
      }
    });
  }

  for (auto [name, state, what] :
       {std::tuple{"halt", fleet::ReleaseState::kHalted, "Stop rolling a release out"},
        std::tuple{"resume", fleet::ReleaseState::kActive,
                   "Let a halted release roll out again"}}) {
    auto* cmd = release->add_subcommand(name, what);
    cmd->footer(std::string("Example:\n  fleetwave release ") + name +
                " --model arm-v2 --version 1.5.0");
    auto model = std::make_shared<std::string>();
    auto version = std::make_shared<std::string>();
    cmd->add_option("--model", *model, "Hardware model")->required();
    cmd->add_option("--version", *version, "Release version")->required();
    cmd->callback([&g, model, version, state = state] {
      Require(fleet::CheckModel(*model));
      Require(fleet::CheckVersion("version", *version));
      auto conn = OpenDatabase(g);
      fleet::ReleaseState was = db::Registry(*conn).SetReleaseState(*model, *version, state);
      std::printf("release %s %s: %s (was %s)\n", model->c_str(), version->c_str(),
                  std::string(fleet::ToString(state)).c_str(),
                  std::string(fleet::ToString(was)).c_str());
    });
  }
}

int RunCli(int argc, char** argv) {
  CLI::App app{"fleetwave: rolls firmware out to fleets in widening, health-gated waves"};
  app.footer("Run `fleetwave COMMAND --help` for a command's flags and an example.");
  app.set_version_flag("--version", "fleetwave 0.1.0");
  app.require_subcommand(1);
  // Global flags (--db, --mqtt, --tls-*, --plain-tcp, --log-*) may also follow the command.
  app.fallthrough();
  Globals g;
  app.add_option("--db", g.db, "PostgreSQL connection string or URI")->envname("FLEETWAVE_DB");
  app.add_option("--mqtt", g.mqtt, "MQTT broker URI")
      ->envname("FLEETWAVE_MQTT")
      ->capture_default_str();
  app.add_option("--tls-ca", g.tls_ca, "CA certificate that signed the broker's (ssl:// only)")
      ->envname("FLEETWAVE_TLS_CA");
  app.add_option("--tls-cert", g.tls_cert,
                 "Client certificate (PEM) whose common name is this program's identity")
      ->envname("FLEETWAVE_TLS_CERT");
  app.add_option("--tls-key", g.tls_key, "The client certificate's key (PEM, mode 0600)")
      ->envname("FLEETWAVE_TLS_KEY");
  app.add_flag("--plain-tcp", g.plain_tcp,
               "Allow a tcp:// broker: no encryption, no identities (development only)")
      ->envname("FLEETWAVE_PLAIN_TCP");
  app.add_option("--log-format", g.log_format,
                 "Log lines on stderr: text or json (one object a line)")
      ->envname("FLEETWAVE_LOG_FORMAT")
      ->capture_default_str();
  app.add_option("--log-level", g.log_level,
                 "Least severe log level shown: trace, debug, info, warn, error or off")
      ->envname("FLEETWAVE_LOG_LEVEL")
      ->capture_default_str();
  // Runs after parsing, before the command's callback: logging is set up before it logs.
  app.parse_complete_callback([&g] {
    auto format = ParseLogFormat(g.log_format);
    if (!format) {
      throw UsageError("--log-format (FLEETWAVE_LOG_FORMAT) \"" + g.log_format +
                       "\" is invalid: use text or json");
    }
    auto level = ParseLogLevel(g.log_level);
    if (!level) {
      throw UsageError("--log-level (FLEETWAVE_LOG_LEVEL) \"" + g.log_level +
                       "\" is invalid: use trace, debug, info, warn, error or off");
    }
    ConfigureLogging(*format, *level);
  });
  AddMigrate(app, g);
  AddDevice(app, g);
  AddRelease(app, g);
  AddKeys(app);
  AddController(app, g);
  AddWatchdog(app, g);
  AddRollout(app, g);
  AddSimulate(app, g);
  AddStatus(app, g);
  AddSecurity(app, g);  // after AddDevice: it adds `device cert`

  try {
    app.parse(argc, argv);
    return 0;
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Point at the help of the deepest command the user reached, e.g. `fleetwave device --help`.
    std::string chain = "fleetwave";
    for (CLI::App* cmd = &app; !cmd->get_subcommands().empty();) {
      cmd = cmd->get_subcommands().front();
      chain += " " + cmd->get_name();
    }
    std::fprintf(stderr, "error: %s\nRun `%s --help` for the commands, flags and an example.\n",
                 e.what(), chain.c_str());
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // db::Error and the rest
    // With JSON logs, stderr stays one JSON object per line for the log collector.
    if (CurrentLogFormat() == LogFormat::kJson) {
      spdlog::error("{}", e.what());
    } else {
      std::fprintf(stderr, "error: %s\n", e.what());
    }
    return 1;
  }
}

}  // namespace controller
