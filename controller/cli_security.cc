// `fleetwave ca init`, `fleetwave device cert`, `fleetwave broker cert|config`: device identity
// on the broker with mutual TLS (pki/pki.h). They work on files only: no database, no broker.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "controller/cli_common.h"
#include "pki/pki.h"

namespace controller {
namespace {

namespace fs = std::filesystem;

constexpr char kBrokerCert[] = "broker.crt";
constexpr char kBrokerKey[] = "broker.key";
constexpr char kBrokerIdentity[] = "fleetwave-broker";

std::string Join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

void RequireDays(int days) { Require(pki::CheckDays(days, "--days")); }

// Creates `dir` (and its parents) when missing; new directories are 0700 when `private_dir`:
// they hold secret keys. An existing directory keeps its mode.
void EnsureDir(const std::string& flag, const std::string& dir, bool private_dir) {
  if (dir.empty()) throw UsageError(flag + " is empty: give a directory");
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec))
      throw UsageError(flag + " " + dir + " is not a directory: give a directory");
    return;
  }
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create directory " + dir + ": " + ec.message());
  if (private_dir) ::chmod(dir.c_str(), 0700);
}

// The CA of --ca-dir: both files must be there.
void RequireCa(const std::string& ca_dir) {
  if (ca_dir.empty())
    throw UsageError("--ca-dir is empty: give the directory of `fleetwave ca init`");
  for (const char* name : {pki::kCaKeyFile, pki::kCaCertFile}) {
    if (!fs::exists(Join(ca_dir, name)))
      throw UsageError("--ca-dir " + ca_dir + " has no " + name +
                       ": give the directory `fleetwave ca init --dir DIR` created, or create a "
                       "CA there with it");
  }
}

void Issue(const std::string& ca_dir, const pki::IssueRequest& request, const std::string& cert,
           const std::string& key) {
  try {
    pki::IssueCertificate(Join(ca_dir, pki::kCaKeyFile), Join(ca_dir, pki::kCaCertFile), request,
                          cert, key);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct BrokerCertFlags {
  std::string ca_dir;
  std::string out;
  std::vector<std::string> names;
  int days = 825;
};

void CheckBrokerCertFlags(const BrokerCertFlags& f) {
  RequireCa(f.ca_dir);
  RequireDays(f.days);
  for (const std::string& name : f.names)
    if (auto e = pki::CheckServerName(name)) throw UsageError("--name: " + *e);
}

// Issues OUT/broker.crt and OUT/broker.key, or keeps them when both exist and chain to the CA.
// Returns whether it issued.
bool EnsureBrokerCert(const BrokerCertFlags& f, bool reuse) {
  const std::string cert = Join(f.out, kBrokerCert);
  const std::string key = Join(f.out, kBrokerKey);
  const bool have_cert = fs::exists(cert);
  const bool have_key = fs::exists(key);
  if (reuse && have_cert && have_key) {
    if (auto e =
            pki::VerifyIssuedBy(Join(f.ca_dir, pki::kCaCertFile), cert, pki::CertKind::kServer))
      throw std::runtime_error(*e + "; move " + cert + " and " + key +
                               " away to issue a new broker certificate from this CA");
    return false;
  }
  if (reuse && (have_cert || have_key))
    throw std::runtime_error("only one of " + cert + " and " + key +
                             " exists: move it away to issue a new broker certificate");
  pki::IssueRequest request;
  request.identity = kBrokerIdentity;
  request.kind = pki::CertKind::kServer;
  request.server_names = f.names;
  request.days = f.days;
  Issue(f.ca_dir, request, cert, key);
  return true;
}

struct BrokerConfigFlags {
  BrokerCertFlags cert;
  int port = 0;
  std::string bind = "127.0.0.1";
  pki::AclOptions acl;
  std::string persistence_dir;
  std::string broker_user;  // empty: the default (mosquitto when root)
};

// The account Mosquitto runs as: started as root it drops to `user` (default mosquitto) BEFORE
// it reads its certificate, key and ACL (Mosquitto 2.0.11, measured), so a root-owned 0600
// broker.key stops it with "Unable to load server key file ... Permission denied". The key is
// handed to that user instead of being made readable to others.
struct Account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

std::optional<Account> BrokerAccount(const std::string& flag_value) {
  std::string name = flag_value;
  if (name.empty()) {
    if (::geteuid() != 0) return std::nullopt;  // the broker runs as whoever starts it
    name = "mosquitto";
  }
  const passwd* pw = ::getpwnam(name.c_str());
  if (!pw) {
    if (flag_value.empty()) return std::nullopt;  // no mosquitto account: nothing to hand over
    throw UsageError("--broker-user " + name +
                     " is not a user on this machine: give the user "
                     "Mosquitto runs as (its `user` setting, mosquitto by default)");
  }
  return Account{name, pw->pw_uid, pw->pw_gid};
}

void GiveTo(const Account& account, const std::string& path) {
  if (::chown(path.c_str(), account.uid, account.gid) != 0)
    throw std::runtime_error("cannot give " + path + " to user " + account.name + ": " +
                             std::strerror(errno) + " (run as root, or omit --broker-user)");
}

}  // namespace

void AddSecurity(CLI::App& app, Globals&) {
  // ---- ca init ----
  auto* ca = app.add_subcommand("ca", "The fleet certificate authority (device identity)");
  ca->require_subcommand(1);
  {
    auto* cmd = ca->add_subcommand("init", "Create the fleet CA: DIR/ca.key (0600), DIR/ca.crt");
    cmd->footer(
        "The CA key signs every device, controller and broker certificate: keep DIR private\n"
        "(offline if you can). The key is ECDSA P-256, never overwritten, and refused when\n"
        "group or others can read it.\n"
        "Example:\n  fleetwave ca init --dir /etc/fleetwave/ca --name \"acme fleet CA\" --days "
        "3650");
    auto dir = std::make_shared<std::string>();
    auto name = std::make_shared<std::string>("fleetwave fleet CA");
    auto days = std::make_shared<int>(3650);
    cmd->add_option("--dir", *dir, "Directory for ca.key and ca.crt (created 0700 if missing)")
        ->required();
    cmd->add_option("--name", *name, "The CA's common name")->capture_default_str();
    cmd->add_option("--days", *days, "Validity in days")->capture_default_str();
    cmd->callback([dir, name, days] {
      RequireDays(*days);
      if (name->empty() || name->size() > 64)
        throw UsageError("--name \"" + *name + "\" is invalid: use 1 to 64 characters");
      EnsureDir("--dir", *dir, /*private_dir=*/true);
      const std::string key = Join(*dir, pki::kCaKeyFile);
      const std::string cert = Join(*dir, pki::kCaCertFile);
      try {
        pki::CreateCa(key, cert, *name, *days);
      } catch (const std::invalid_argument& e) {
        throw UsageError(std::string("--name: ") + e.what());
      }
      std::printf(
          "created fleet CA \"%s\" (valid %d days)\n  key:         %s (mode 0600)\n"
          "  certificate: %s\nnext: fleetwave device cert ID --ca-dir %s --out DIR\n",
          name->c_str(), *days, key.c_str(), cert.c_str(), dir->c_str());
    });
  }

  // ---- device cert ----
  {
    // `device` is registered by AddDevice (cli.cc), which RunCli calls first.
    CLI::App* device = app.get_subcommand("device");
    auto* cmd = device->add_subcommand(
        "cert", "Issue a client certificate whose identity (CN, MQTT username) is ID");
    cmd->footer(
        "Writes OUTDIR/ID.crt and OUTDIR/ID.key (0600); neither is ever overwritten. Give the\n"
        "device both and the CA's ca.crt (to check the broker). The controller and the simulator\n"
        "use the same command with their identities (see `fleetwave broker config`).\n"
        "Examples:\n  fleetwave device cert robot-0001 --ca-dir ca --out certs\n"
        "  fleetwave device cert fleetwave-controller --ca-dir ca --out certs\n"
        "  fleetwave device cert fleetwave-simulator --ca-dir ca --out certs   # rehearsals only");
    auto id = std::make_shared<std::string>();
    auto ca_dir = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto days = std::make_shared<int>(825);
    cmd->add_option("id", *id, "Device id (thing name), or a controller/simulator identity")
        ->required();
    cmd->add_option("--ca-dir", *ca_dir, "Directory of the fleet CA (fleetwave ca init --dir)")
        ->required();
    cmd->add_option("--out", *out, "Directory for ID.crt and ID.key (created 0700 if missing)")
        ->required();
    cmd->add_option("--days", *days, "Validity in days (at most the CA's)")->capture_default_str();
    cmd->callback([id, ca_dir, out, days] {
      Require(pki::CheckIdentity(*id, "device id"));
      RequireCa(*ca_dir);
      RequireDays(*days);
      EnsureDir("--out", *out, /*private_dir=*/true);
      pki::IssueRequest request;
      request.identity = *id;
      request.days = *days;
      const std::string cert = Join(*out, *id + ".crt");
      const std::string key = Join(*out, *id + ".key");
      Issue(*ca_dir, request, cert, key);
      std::printf(
          "issued client certificate for \"%s\" (valid %d days)\n  certificate: %s\n"
          "  key:         %s (mode 0600)\n  CA:          %s\n",
          id->c_str(), *days, cert.c_str(), key.c_str(), Join(*ca_dir, pki::kCaCertFile).c_str());
    });
  }

  // ---- broker cert | config ----
  auto* broker = app.add_subcommand("broker", "Mosquitto with mutual TLS for the fleet");
  broker->require_subcommand(1);
  auto add_cert_flags = [](CLI::App* cmd, BrokerCertFlags& f) {
    cmd->add_option("--ca-dir", f.ca_dir, "Directory of the fleet CA (fleetwave ca init --dir)")
        ->required();
    cmd->add_option("--out", f.out, "Output directory (created 0700 if missing)")->required();
    cmd->add_option("--name", f.names,
                    "Another DNS name or IP address of the broker for its certificate "
                    "(repeatable; 127.0.0.1 and localhost are always in it)");
    cmd->add_option("--days", f.days, "Validity of the broker certificate in days")
        ->capture_default_str();
  };
  {
    auto* cmd = broker->add_subcommand(
        "cert", "Issue the broker's server certificate: OUTDIR/broker.crt, broker.key (0600)");
    cmd->footer(
        "`broker config` issues it too when it is missing; this is for a broker configured by\n"
        "hand. Neither file is ever overwritten.\n"
        "Example:\n  fleetwave broker cert --ca-dir ca --out broker --name mqtt.example.com");
    auto f = std::make_shared<BrokerCertFlags>();
    add_cert_flags(cmd, *f);
    cmd->callback([f] {
      CheckBrokerCertFlags(*f);
      EnsureDir("--out", f->out, /*private_dir=*/true);
      EnsureBrokerCert(*f, /*reuse=*/false);
      std::printf("issued broker certificate\n  certificate: %s\n  key:         %s (mode 0600)\n",
                  Join(f->out, kBrokerCert).c_str(), Join(f->out, kBrokerKey).c_str());
    });
  }
  {
    auto* cmd = broker->add_subcommand(
        "config", "Write a Mosquitto TLS configuration and ACL (and the broker certificate)");
    cmd->footer(
        "Writes into OUTDIR: ca.crt (a copy of the CA's), broker.crt and broker.key (issued when\n"
        "missing, kept otherwise), mosquitto.conf and acl (rewritten every time). The listener\n"
        "requires a client certificate from the CA, takes its CN as the username and denies\n"
        "anonymous clients. The ACL lets each device read and write only its own jobs and\n"
        "telemetry topics; the controller identity reads all requests and telemetry and writes\n"
        "answers and notices. --simulator-identity adds an identity that may act as EVERY\n"
        "device: for rehearsals and tests only, never on a broker real devices use.\n"
        "Started as root, Mosquitto drops to its user (mosquitto) BEFORE reading its key,\n"
        "certificates and ACL: run as root, this command gives broker.key (0600) and the\n"
        "persistence directory to that user; every parent directory of OUTDIR must let it\n"
        "pass (o+x).\n"
        "Example:\n  fleetwave ca init --dir ca\n"
        "  fleetwave broker config --ca-dir ca --out broker --port 8883\n"
        "  fleetwave device cert fleetwave-controller --ca-dir ca --out certs\n"
        "  mosquitto -c broker/mosquitto.conf");
    auto f = std::make_shared<BrokerConfigFlags>();
    add_cert_flags(cmd, f->cert);
    cmd->add_option("--port", f->port, "TLS listener port (8883 is MQTT over TLS's)")->required();
    cmd->add_option("--bind", f->bind, "Listener address")->capture_default_str();
    cmd->add_option("--controller-identity", f->acl.controller_identity,
                    "The controller certificate's CN")
        ->capture_default_str();
    cmd->add_option("--simulator-identity", f->acl.simulator_identity,
                    "Add an identity that plays every device (rehearsals only), e.g. "
                    "fleetwave-simulator");
    cmd->add_option("--jobs-root", f->acl.jobs_root, "Topic root of the jobs API")
        ->capture_default_str();
    cmd->add_option("--telemetry-root", f->acl.telemetry_root, "Topic root of telemetry")
        ->capture_default_str();
    cmd->add_option("--persistence-dir", f->persistence_dir,
                    "Keep sessions and queued messages in this directory (default: persistence "
                    "off)");
    cmd->add_option("--broker-user", f->broker_user,
                    "The user Mosquitto runs as: broker.key (0600) is given to it and the config "
                    "says `user`; default mosquitto when run as root");
    cmd->callback([f] {
      CheckBrokerCertFlags(f->cert);
      const std::optional<Account> account = BrokerAccount(f->broker_user);
      if (f->port < 1 || f->port > 65535)
        throw UsageError("--port " + std::to_string(f->port) + " is invalid: use 1 to 65535");
      if (auto e = pki::CheckAclOptions(f->acl)) {
        // Name the flag: the checks name the field ("jobs root", "controller identity", ...).
        std::string flag = e->starts_with("jobs root")             ? "--jobs-root"
                           : e->starts_with("telemetry root")      ? "--telemetry-root"
                           : e->starts_with("controller identity") ? "--controller-identity"
                                                                   : "--simulator-identity";
        throw UsageError(flag + ": " + *e);
      }
      const std::string out = fs::absolute(f->cert.out).lexically_normal().string();
      pki::BrokerConfig config;
      config.port = f->port;
      config.bind_address = f->bind;
      config.cafile = Join(out, pki::kCaCertFile);
      config.certfile = Join(out, kBrokerCert);
      config.keyfile = Join(out, kBrokerKey);
      config.acl_file = Join(out, "acl");
      if (!f->persistence_dir.empty())
        config.persistence_dir = fs::absolute(f->persistence_dir).lexically_normal().string();
      if (auto e = pki::CheckBrokerConfig(config)) {
        std::string flag = e->starts_with("bind") ? "--bind" : "--out/--persistence-dir";
        throw UsageError(flag + ": " + *e);
      }
      if (account) config.user = account->name;
      // Not private: the broker's user must reach the acl and certificates; broker.key is 0600.
      EnsureDir("--out", f->cert.out, /*private_dir=*/false);
      BrokerCertFlags cert_flags = f->cert;
      cert_flags.out = out;
      const bool issued = EnsureBrokerCert(cert_flags, /*reuse=*/true);
      if (account) {
        GiveTo(*account, config.keyfile);
        if (!config.persistence_dir.empty()) {
          EnsureDir("--persistence-dir", config.persistence_dir, /*private_dir=*/true);
          GiveTo(*account, config.persistence_dir);
        }
      }
      pki::WriteFileAtomically(config.cafile, ReadText(Join(f->cert.ca_dir, pki::kCaCertFile)),
                               0644);
      pki::WriteFileAtomically(config.acl_file, pki::AclText(f->acl), 0644);
      const std::string conf = Join(out, "mosquitto.conf");
      pki::WriteFileAtomically(conf, pki::MosquittoConfText(config), 0644);
      std::printf(
          "wrote %s\n  listener: %s:%d (TLS, client certificates required)\n"
          "  acl:      %s (controller: %s%s%s)\n  broker certificate: %s (%s)\n",
          conf.c_str(), f->bind.c_str(), f->port, config.acl_file.c_str(),
          f->acl.controller_identity.c_str(),
          f->acl.simulator_identity.empty() ? "" : ", simulator: ",
          f->acl.simulator_identity.c_str(), config.certfile.c_str(), issued ? "issued" : "kept");
    });
  }
}

}  // namespace controller
