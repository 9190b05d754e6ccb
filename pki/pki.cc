#include "pki/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fleet/registry.h"

namespace pki {
namespace {

// A PEM key of P-256 is about 250 bytes; anything much larger is not one of ours.
constexpr size_t kMaxKeyFileBytes = 16 * 1024;

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Ext = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using Bignum = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;

// Wipes a std::string that held secret material before it is freed.
struct WipeOnExit {
  std::string& text;
  ~WipeOnExit() { OPENSSL_cleanse(text.data(), text.size()); }
};

// OpenSSL's queued errors as one line (and the queue cleared), for a message that says why.
std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

[[noreturn]] void Fail(const std::string& what) {
  throw PkiError(what + " (" + OpenSslErrors() + ")");
}

void Check(int ok, const char* what) {
  if (ok != 1) Fail(what);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void RefuseExisting(const std::string& path, const char* what) {
  if (Exists(path))
    throw signing::KeyFileError(std::string(what) + " " + path +
                                " already exists; it is never overwritten (move it away or "
                                "choose another path)");
}

Key NewKey() {
  Key key(EVP_EC_gen("P-256"));
  if (!key) Fail("cannot generate a P-256 key");
  return key;
}

std::string PemOf(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

void WriteKey(const std::string& path, EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));  // freeing a memory BIO clears its buffer
  if (!bio) Fail("out of memory");
  Check(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr),
        "cannot encode the private key");
  std::string pem = PemOf(bio.get());
  WipeOnExit wipe{pem};
  signing::CreateKeyFile(path, pem, 0600);
}

void WriteCert(const std::string& path, X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio) Fail("out of memory");
  Check(PEM_write_bio_X509(bio.get(), cert), "cannot encode the certificate");
  signing::CreateKeyFile(path, PemOf(bio.get()), 0644);
}

// The key first: if the certificate cannot be written, the key is removed again, so a retry
// starts clean rather than tripping over a half-made pair.
void WriteKeyAndCert(const std::string& key_path, EVP_PKEY* key, const std::string& cert_path,
                     X509* cert) {
  WriteKey(key_path, key);
  try {
    WriteCert(cert_path, cert);
  } catch (...) {
    ::unlink(key_path.c_str());
    throw;
  }
}

// Never prompts on a terminal for a passphrase: an encrypted key is simply not readable here.
int NoPassphrase(char*, int, int, void*) { return -1; }

Key LoadKey(const std::string& path) {
  std::string pem = signing::ReadKeyFile(path, /*secret=*/true, kMaxKeyFileBytes);
  WipeOnExit wipe{pem};
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) Fail("out of memory");
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    throw signing::KeyFileError("key file " + path +
                                " is not an unencrypted PEM private key (expected the ca.key "
                                "that `fleetwave ca init` wrote)");
  }
  return key;
}

Cert LoadCert(const std::string& path) {
  Bio bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) {
    ERR_clear_error();
    throw PkiError("cannot read certificate " + path + ": " + std::strerror(errno));
  }
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!cert) {
    ERR_clear_error();
    throw PkiError("certificate " + path + " is not a PEM X.509 certificate");
  }
  return cert;
}

// A positive serial of 16 random bytes (RFC 5280 allows up to 20; CAs use at least 64 random
// bits so that serials are unpredictable).
void SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  Check(RAND_bytes(bytes, sizeof bytes), "no random bytes for the serial");
  bytes[0] &= 0x7f;  // DER integers are signed: keep it positive
  bytes[0] |= 0x01;  // and never zero
  Bignum bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)))
    Fail("cannot set the serial");
}

void AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  Ext ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext) Fail(std::string("cannot build the ") + OBJ_nid2sn(nid) + " extension '" + value + "'");
  Check(X509_add_ext(cert, ext.get(), -1), "cannot add an extension");
}

// A new certificate with version 3, a random serial, `key`'s public half, subject CN `cn`, valid
// from now for `days` days.
Cert NewCert(EVP_PKEY* key, const std::string& cn, int days) {
  Cert cert(X509_new());
  if (!cert) Fail("out of memory");
  Check(X509_set_version(cert.get(), 2), "cannot set the version");
  SetRandomSerial(cert.get());
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr))
    Fail("cannot set the validity");
  Check(X509_set_pubkey(cert.get(), key), "cannot set the public key");
  // V_ASN1_UTF8STRING, not MBSTRING_UTF8: the latter enforces X.520's 64-character bound on a
  // common name, and device ids may be up to 128 characters. OpenSSL and Mosquitto read longer
  // ones fine (tested).
  Check(X509_NAME_add_entry_by_NID(
            X509_get_subject_name(cert.get()), NID_commonName, V_ASN1_UTF8STRING,
            reinterpret_cast<const unsigned char*>(cn.data()), static_cast<int>(cn.size()), -1, 0),
        "cannot set the subject");
  return cert;
}

bool IsIpAddress(std::string_view name) {
  std::string s(name);
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool HasControl(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

std::optional<std::string> CheckRoot(std::string_view field, std::string_view root) {
  auto bad = [&](const char* why) {
    return std::string(field) + " \"" + std::string(root) + "\" is invalid: " + why;
  };
  if (root.empty()) return bad("it is empty");
  if (root.size() > 128) return bad("use at most 128 characters");
  if (root.find_first_of("+#%") != std::string_view::npos)
    return bad("a topic root has no MQTT wildcard (+ #) and no % (ACL substitution)");
  for (unsigned char c : root)
    if (c <= 0x20 || c == 0x7f) return bad("a topic root has no spaces or control characters");
  if (root.front() == '/' || root.back() == '/' || root.find("//") != std::string_view::npos)
    return bad("a topic root has no empty level (no leading, trailing or double /)");
  return std::nullopt;
}

}  // namespace

// ---- Checks ----------------------------------------------------------------------------------

std::optional<std::string> CheckIdentity(std::string_view name, std::string_view field) {
  // The registry's rule for device ids already excludes '/', '+', '#' and '$' (see pki.h).
  if (auto problem = fleet::CheckDeviceId(name)) {
    std::string message = *problem;
    if (message.starts_with("device id")) message.replace(0, 9, std::string(field));
    return message + "; it becomes the MQTT username in the broker's ACL";
  }
  return std::nullopt;
}

std::optional<std::string> CheckServerName(std::string_view name) {
  if (IsIpAddress(name)) return std::nullopt;
  std::string_view rest = name;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  bool ok = !rest.empty() && rest.size() <= 253 && rest.front() != '.' && rest.back() != '.' &&
            rest.front() != '-' && rest.find("..") == std::string_view::npos;
  for (char c : rest) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) ok = false;
  }
  if (ok) return std::nullopt;
  return "server name \"" + std::string(name) +
         "\" is invalid: use an IP address or a DNS name (letters, digits, - and .), e.g. "
         "broker.example.com";
}

std::optional<std::string> CheckDays(int days, std::string_view field) {
  if (days >= 1 && days <= kMaxDays) return std::nullopt;
  return std::string(field) + " " + std::to_string(days) + " is invalid: use 1 to " +
         std::to_string(kMaxDays);
}

std::optional<std::string> CheckAclOptions(const AclOptions& o) {
  if (auto e = CheckRoot("jobs root", o.jobs_root)) return e;
  if (auto e = CheckRoot("telemetry root", o.telemetry_root)) return e;
  if (auto e = CheckIdentity(o.controller_identity, "controller identity")) return e;
  if (!o.simulator_identity.empty()) {
    if (auto e = CheckIdentity(o.simulator_identity, "simulator identity")) return e;
    if (o.simulator_identity == o.controller_identity)
      return "the simulator identity must differ from the controller identity \"" +
             o.controller_identity + "\"";
  }
  return std::nullopt;
}

std::optional<std::string> CheckBrokerConfig(const BrokerConfig& c) {
  if (c.port < 1 || c.port > 65535)
    return "port " + std::to_string(c.port) + " is invalid: use 1 to 65535";
  if (!c.user.empty() && CheckIdentity(c.user)) return "user \"" + c.user + "\" is invalid";
  if (c.bind_address.empty() || c.bind_address.find_first_of(" \t") != std::string::npos ||
      HasControl(c.bind_address))
    return "bind address \"" + c.bind_address +
           "\" is invalid: use an IP address or host name, e.g. 127.0.0.1";
  for (auto [field, path] : {std::pair{"cafile", &c.cafile}, std::pair{"certfile", &c.certfile},
                             std::pair{"keyfile", &c.keyfile}, std::pair{"acl_file", &c.acl_file},
                             std::pair{"persistence directory", &c.persistence_dir}}) {
    if (path->empty() && std::string_view(field) != "persistence directory")
      return std::string(field) + " is empty: give a path";
    if (HasControl(*path)) return std::string(field) + " has a control character in its path";
  }
  return std::nullopt;
}

// ---- CA and certificates ---------------------------------------------------------------------

void CreateCa(const std::string& key_path, const std::string& cert_path,
              const std::string& common_name, int days) {
  if (auto e = CheckDays(days)) throw std::invalid_argument(*e);
  if (common_name.empty() || common_name.size() > 64 || HasControl(common_name))
    throw std::invalid_argument("CA name \"" + common_name +
                                "\" is invalid: use 1 to 64 printable characters");
  RefuseExisting(key_path, "key file");
  RefuseExisting(cert_path, "certificate");

  Key key = NewKey();
  Cert cert = NewCert(key.get(), common_name, days);
  Check(X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())),
        "cannot set the issuer");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE");
  AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) Fail("cannot sign the CA certificate");

  WriteKeyAndCert(key_path, key.get(), cert_path, cert.get());
}

void IssueCertificate(const std::string& ca_key_path, const std::string& ca_cert_path,
                      const IssueRequest& request, const std::string& cert_path,
                      const std::string& key_path) {
  if (auto e = CheckIdentity(request.identity)) throw std::invalid_argument(*e);
  if (auto e = CheckDays(request.days)) throw std::invalid_argument(*e);
  for (const std::string& name : request.server_names)
    if (auto e = CheckServerName(name)) throw std::invalid_argument(*e);
  if (request.kind == CertKind::kClient && !request.server_names.empty())
    throw std::invalid_argument("server names are for a broker (server) certificate only");
  RefuseExisting(key_path, "key file");
  RefuseExisting(cert_path, "certificate");

  Key ca_key = LoadKey(ca_key_path);
  Cert ca_cert = LoadCert(ca_cert_path);
  if (X509_check_ca(ca_cert.get()) < 1)
    throw PkiError("certificate " + ca_cert_path + " is not a CA certificate");
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    throw PkiError("CA key " + ca_key_path + " does not belong to CA certificate " + ca_cert_path);
  }

  Key key = NewKey();
  Cert cert = NewCert(key.get(), request.identity, request.days);
  Check(X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get())),
        "cannot set the issuer");
  // A certificate outliving its CA would only fail verification later, confusingly.
  if (ASN1_TIME_compare(X509_get0_notAfter(cert.get()), X509_get0_notAfter(ca_cert.get())) > 0)
    Check(X509_set1_notAfter(cert.get(), X509_get0_notAfter(ca_cert.get())),
          "cannot set the validity");

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca_cert.get(), cert.get(), nullptr, nullptr, 0);
  AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
  AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
  if (request.kind == CertKind::kClient) {
    AddExtension(cert.get(), &ctx, NID_ext_key_usage, "clientAuth");
  } else {
    AddExtension(cert.get(), &ctx, NID_ext_key_usage, "serverAuth");
    std::string san = "IP:127.0.0.1,DNS:localhost";
    for (const std::string& name : request.server_names)
      san += (IsIpAddress(name) ? ",IP:" : ",DNS:") + name;
    AddExtension(cert.get(), &ctx, NID_subject_alt_name, san);
  }
  AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) <= 0) Fail("cannot sign the certificate");

  WriteKeyAndCert(key_path, key.get(), cert_path, cert.get());
}

std::optional<std::string> VerifyIssuedBy(const std::string& ca_cert_path,
                                          const std::string& cert_path, CertKind kind) {
  Cert ca = LoadCert(ca_cert_path);
  Cert cert = LoadCert(cert_path);
  std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>> store(X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>> ctx(
      X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1)
    Fail("cannot set up certificate verification");
  X509_STORE_CTX_set_purpose(
      ctx.get(), kind == CertKind::kClient ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER);
  if (X509_verify_cert(ctx.get()) == 1) return std::nullopt;
  ERR_clear_error();
  return "certificate " + cert_path + " does not verify against CA " + ca_cert_path + ": " +
         X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

std::string CommonName(const std::string& cert_path) {
  Cert cert = LoadCert(cert_path);
  X509_NAME* name = X509_get_subject_name(cert.get());
  const int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) throw PkiError("certificate " + cert_path + " has no common name");
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                     static_cast<size_t>(ASN1_STRING_length(data)));
}

// ---- Mosquitto -------------------------------------------------------------------------------

// Mosquitto 2.0's default ACL check (verified against 2.0.11 by tests/pki/broker_test.cc):
// - A subscription is allowed when a `read` rule matches it with the subscription's own
//   wildcards taken literally: the controller's `topic read R/+/jobs/start-next` allows its
//   subscription R/+/jobs/start-next, and a device's `pattern read R/%u/jobs/start-next/+`
//   allows R/<id>/jobs/start-next/+ (what the simulator subscribes) as well as .../accepted.
// - Every message is checked again on delivery (read) and on publish (write); a denied publish is
//   acknowledged to the client and silently dropped.
// - Rules that start with '+' or '#' never match topics starting with '$': ours name the root.
// - `pattern` rules apply to every client, the controller and simulator included.
std::string AclText(const AclOptions& o) {
  if (auto e = CheckAclOptions(o)) throw std::invalid_argument(*e);
  const std::string& r = o.jobs_root;
  const std::string& t = o.telemetry_root;
  // The request topics of thing `who` (a pattern's %u or a user's +), and their answers.
  auto requests = [&](const std::string& who) {
    return std::vector<std::string>{r + "/" + who + "/jobs/get", r + "/" + who + "/jobs/start-next",
                                    r + "/" + who + "/jobs/+/get",
                                    r + "/" + who + "/jobs/+/update"};
  };
  auto notices = [&](const std::string& who) {
    return std::vector<std::string>{r + "/" + who + "/jobs/notify-next",
                                    r + "/" + who + "/jobs/notify"};
  };
  std::string out;
  auto line = [&](const std::string& text) { out += text + "\n"; };

  line("# Generated by `fleetwave broker config`. Regenerate rather than edit.");
  line("#");
  line("# Every client authenticates with a certificate from the fleet CA; its common name is its");
  line("# MQTT username (use_identity_as_username) and, for a device, its thing name. Mosquitto");
  line("# substitutes the username for %u, and denies a pattern to a username with + # or /.");
  line("# Jobs topics under \"" + r + "\", telemetry under \"" + t + "\".");
  line("");
  line("# Devices: publish their own requests and telemetry; read their own answers and notices.");
  for (const std::string& topic : requests("%u")) line("pattern write " + topic);
  line("pattern write " + t + "/%u/telemetry");
  for (const std::string& topic : requests("%u")) line("pattern read " + topic + "/+");
  for (const std::string& topic : notices("%u")) line("pattern read " + topic);
  line("");
  line("# The controller: reads every thing's requests and telemetry, writes answers and notices.");
  line("user " + o.controller_identity);
  for (const std::string& topic : requests("+")) line("topic read " + topic);
  line("topic read " + t + "/+/telemetry");
  for (const std::string& topic : requests("+")) {
    line("topic write " + topic + "/accepted");
    line("topic write " + topic + "/rejected");
  }
  for (const std::string& topic : notices("+")) line("topic write " + topic);
  if (!o.simulator_identity.empty()) {
    line("");
    line("# The simulator: the device side of EVERY thing. This identity can speak for every");
    line("# device: for rehearsals and tests only, never on a broker real devices use.");
    line("user " + o.simulator_identity);
    for (const std::string& topic : requests("+")) line("topic write " + topic);
    line("topic write " + t + "/+/telemetry");
    for (const std::string& topic : requests("+")) line("topic read " + topic + "/+");
    for (const std::string& topic : notices("+")) line("topic read " + topic);
  }
  return out;
}

std::string MosquittoConfText(const BrokerConfig& c) {
  if (auto e = CheckBrokerConfig(c)) throw std::invalid_argument(*e);
  std::string out;
  auto line = [&](const std::string& text) { out += text + "\n"; };
  line("# Generated by `fleetwave broker config` (Mosquitto 2.0). Regenerate rather than edit.");
  line("");
  line("# Mutual TLS: a client must present a certificate from the fleet CA; its common name is");
  line("# its username, and the ACL confines it to its own topics. No anonymous access.");
  line("listener " + std::to_string(c.port) + " " + c.bind_address);
  line("cafile " + c.cafile);
  line("certfile " + c.certfile);
  line("keyfile " + c.keyfile);
  line("tls_version tlsv1.2");
  line("require_certificate true");
  line("use_identity_as_username true");
  line("allow_anonymous false");
  line("acl_file " + c.acl_file);
  if (!c.user.empty()) {
    line("# Started as root, Mosquitto drops to this user before it reads the files above.");
    line("user " + c.user);
  }
  line("");
  if (c.persistence_dir.empty()) {
    line("persistence false");
  } else {
    std::string dir = c.persistence_dir;
    if (!dir.ends_with('/')) dir += '/';  // Mosquitto concatenates location and file name
    line("persistence true");
    line("persistence_location " + dir);
    line("persistence_file mosquitto.db");
  }
  line("");
  line("# Mosquitto's defaults (max_queued_messages 1000, max_inflight_messages 20) silently DROP");
  line("# QoS 1 messages for a client whose queue is full: under fleet load, lost notices and");
  line("# updates with nothing in any log. Queue instead; memory is the real bound.");
  line("max_queued_messages 1000000");
  line("max_queued_bytes 0");
  line("max_inflight_messages 1000");
  line("# Small packets (answers, notices) are not held back by Nagle's algorithm.");
  line("set_tcp_nodelay true");
  line("# Persistent sessions of clients that never come back are forgotten after a week.");
  line("persistent_client_expiration 7d");
  return out;
}

void WriteFileAtomically(const std::string& path, const std::string& content, unsigned mode) {
  const std::string temp = path + ".tmp";
  ::unlink(temp.c_str());  // a leftover of a crashed run; never a key (keys are not written here)
  signing::CreateKeyFile(temp, content, static_cast<mode_t>(mode));
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw PkiError("cannot write " + path + ": " + std::strerror(error));
  }
}

}  // namespace pki
