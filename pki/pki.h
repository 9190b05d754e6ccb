// Device identity on the broker: a fleet CA, one X.509 certificate per device (the AWS IoT
// convention, mutual TLS), and the Mosquitto configuration and ACL that make the certificate's
// common name the MQTT username and confine every device to its own topics.
//
// Keys are ECDSA P-256, written as PEM (PKCS#8) through signing/key_file.h: created with mode
// 0600, never overwritten, and refused on load when group or others can access them.
// Certificates are PEM, mode 0644, never overwritten either (issue a new one under a new name).
// Everything goes through OpenSSL's libcrypto; nothing shells out.
//
// An identity (subject CN) follows the registry's device-id rules (1 to 128 of A-Z a-z 0-9 _ . :
// -), so it has no MQTT wildcard '+' or '#', no '/' and no '$': the broker substitutes it for
// %u in ACL patterns, where any of those would widen the pattern. The controller and the
// simulator get identities of the same form (kControllerIdentity, kSimulatorIdentity).
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "signing/key_file.h"  // KeyFileError

namespace pki {

// OpenSSL failed, or a certificate or CA file is unusable. The message names the file and, where
// OpenSSL says, why. Key-file refusals are signing::KeyFileError.
class PkiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr char kControllerIdentity[] = "fleetwave-controller";
inline constexpr char kSimulatorIdentity[] = "fleetwave-simulator";
inline constexpr char kCaKeyFile[] = "ca.key";
inline constexpr char kCaCertFile[] = "ca.crt";
inline constexpr int kMaxDays = 36500;

// nullopt when `name` may be a certificate identity; otherwise why not (naming `field`).
std::optional<std::string> CheckIdentity(std::string_view name,
                                         std::string_view field = "identity");
// nullopt when `name` is an IPv4/IPv6 address or a DNS name (letters, digits, '-', '.', '*.' as a
// first label) a broker certificate may carry.
std::optional<std::string> CheckServerName(std::string_view name);
// nullopt when 1 <= days <= kMaxDays.
std::optional<std::string> CheckDays(int days, std::string_view field = "days");

// Creates the fleet CA: a new P-256 key at `key_path` (0600) and a self-signed certificate at
// `cert_path` (basicConstraints CA:TRUE critical, keyUsage keyCertSign and cRLSign critical,
// subject CN `common_name`, valid `days` from now). Writes nothing when either file exists.
// REQUIRES: CheckDays(days) is nullopt and common_name is 1 to 64 printable characters
// (otherwise std::invalid_argument).
void CreateCa(const std::string& key_path, const std::string& cert_path,
              const std::string& common_name, int days);

enum class CertKind {
  kClient,  // extendedKeyUsage clientAuth: a device, the controller, the simulator
  kServer,  // extendedKeyUsage serverAuth, subjectAltName IP:127.0.0.1, DNS:localhost + names
};

struct IssueRequest {
  std::string identity;  // subject CN; CheckIdentity for kClient
  CertKind kind = CertKind::kClient;
  std::vector<std::string> server_names;  // kServer: more subjectAltNames (CheckServerName)
  int days = 825;
};

// Issues a certificate for a fresh P-256 key, signed by the CA at ca_key_path/ca_cert_path:
// random 128-bit serial, basicConstraints CA:FALSE, keyUsage digitalSignature, the kind's
// extendedKeyUsage, valid `days` from now (never beyond the CA's own notAfter). Writes the key to
// `key_path` (0600) and the certificate to `cert_path` (0644); nothing when either exists.
// Throws std::invalid_argument for a bad request, KeyFileError for a refused CA key file,
// PkiError for a CA certificate that is not a CA or does not belong to the key.
void IssueCertificate(const std::string& ca_key_path, const std::string& ca_cert_path,
                      const IssueRequest& request, const std::string& cert_path,
                      const std::string& key_path);

// nullopt when the certificate at `cert_path` verifies against the CA certificate at
// `ca_cert_path` (X509_verify_cert, for the given purpose); otherwise why not. Throws PkiError
// when either file is not a PEM certificate.
std::optional<std::string> VerifyIssuedBy(const std::string& ca_cert_path,
                                          const std::string& cert_path, CertKind kind);

// The subject CN of the certificate at `cert_path`. Throws PkiError when it is not one.
std::string CommonName(const std::string& cert_path);

// ---- Mosquitto ------------------------------------------------------------------------------

struct AclOptions {
  std::string jobs_root = "$aws/things";            // R of the jobs topics (mqtt/topics.h)
  std::string telemetry_root = "fleetwave/things";  // root of <root>/T/telemetry
  std::string controller_identity = kControllerIdentity;
  // Empty: no simulator section. Otherwise this identity may act as EVERY device: for
  // rehearsals and tests only, never on a broker that real devices use.
  std::string simulator_identity;
};

// nullopt when the options can make an ACL: roots are topic names without wildcards, '%',
// whitespace, or empty levels; identities pass CheckIdentity and differ.
std::optional<std::string> CheckAclOptions(const AclOptions& options);

// The ACL file: `pattern` rules with %u for every device (its own requests and telemetry to
// write, its own answers and notices to read), a `user` section for the controller (read the
// requests and telemetry of all things, write answers and notices) and, when asked, one for the
// simulator (the device side of all things). REQUIRES: CheckAclOptions(options) is nullopt.
std::string AclText(const AclOptions& options);

struct BrokerConfig {
  int port = 8883;
  std::string bind_address = "127.0.0.1";
  std::string cafile;    // the fleet CA's certificate: client certificates must chain to it
  std::string certfile;  // the broker's certificate (CertKind::kServer) and its key
  std::string keyfile;
  std::string acl_file;
  // Empty: persistence false. Otherwise persistence true with the database in this directory.
  std::string persistence_dir;
  // Non-empty: `user` — the account Mosquitto started as root drops to before it reads the
  // key, certificates and ACL (so they must be readable by it).
  std::string user;
};

// nullopt when the config can be written: port 1..65535, a bind address without whitespace,
// every path non-empty and free of control characters.
std::optional<std::string> CheckBrokerConfig(const BrokerConfig& config);

// mosquitto.conf for Mosquitto 2.0: one TLS listener that requires a client certificate from the
// fleet CA and takes its CN as the username, anonymous access off, the ACL file, persistence, and
// the queue limits fleet load needs. REQUIRES: CheckBrokerConfig(config) is nullopt.
std::string MosquittoConfText(const BrokerConfig& config);

// Writes `content` to `path` through a temporary file and rename, with `mode`: a reader never
// sees half a file. Replaces an existing file (configuration is regenerated, keys never are).
void WriteFileAtomically(const std::string& path, const std::string& content, unsigned mode);

}  // namespace pki
