#include "pki/pki.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace pki {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using Cert = std::unique_ptr<X509, X509Free>;

Cert ReadCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return nullptr;
  Cert cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return cert;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// A fresh directory with a fleet CA in it, removed after the test.
class PkiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "fleetwave-pki-XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    CreateCa(Path("ca.key"), Path("ca.crt"), "test fleet CA", 30);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  void Issue(const std::string& id, CertKind kind = CertKind::kClient,
             std::vector<std::string> names = {}) {
    IssueRequest r;
    r.identity = id;
    r.kind = kind;
    r.server_names = std::move(names);
    r.days = 10;
    IssueCertificate(Path("ca.key"), Path("ca.crt"), r, Path(id + ".crt"), Path(id + ".key"));
  }

  std::filesystem::path dir_;
};

TEST_F(PkiTest, CaCertificateIsASelfSignedCa) {
  Cert ca = ReadCert(Path("ca.crt"));
  ASSERT_TRUE(ca);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  // Self-signed: issuer is subject, and the signature verifies with its own key.
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(ca.get()), X509_get_issuer_name(ca.get())), 0);
  EXPECT_EQ(X509_verify(ca.get(), X509_get0_pubkey(ca.get())), 1);
  EXPECT_EQ(X509_check_issued(ca.get(), ca.get()), X509_V_OK);
  // basicConstraints critical CA:TRUE; keyUsage keyCertSign and cRLSign.
  int critical = -1;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(ca.get(), NID_basic_constraints, &critical, nullptr));
  ASSERT_NE(bc, nullptr);
  EXPECT_TRUE(bc->ca);
  EXPECT_EQ(critical, 1);
  BASIC_CONSTRAINTS_free(bc);
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_EQ(CommonName(Path("ca.crt")), "test fleet CA");
  EXPECT_EQ(EVP_PKEY_get_bits(X509_get0_pubkey(ca.get())), 256);
}

TEST_F(PkiTest, IssuedClientCertificateVerifiesAgainstTheCa) {
  Issue("robot-0001");
  EXPECT_EQ(VerifyIssuedBy(Path("ca.crt"), Path("robot-0001.crt"), CertKind::kClient),
            std::nullopt);
  EXPECT_EQ(CommonName(Path("robot-0001.crt")), "robot-0001");
  Cert cert = ReadCert(Path("robot-0001.crt"));
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_EQ(X509_get_extended_key_usage(cert.get()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  // A client certificate is not a server's.
  EXPECT_NE(VerifyIssuedBy(Path("ca.crt"), Path("robot-0001.crt"), CertKind::kServer),
            std::nullopt);
  // A 16-byte random serial: two certificates differ.
  Issue("robot-0002");
  Cert other = ReadCert(Path("robot-0002.crt"));
  EXPECT_NE(
      ASN1_INTEGER_cmp(X509_get0_serialNumber(cert.get()), X509_get0_serialNumber(other.get())), 0);
  EXPECT_GE(ASN1_STRING_length(X509_get0_serialNumber(cert.get())), 15);
}

TEST_F(PkiTest, ACertificateOfAnotherCaDoesNotVerify) {
  CreateCa(Path("other.key"), Path("other.crt"), "another CA", 30);
  IssueRequest r{"robot-0001", CertKind::kClient, {}, 10};
  IssueCertificate(Path("other.key"), Path("other.crt"), r, Path("x.crt"), Path("x.key"));
  auto problem = VerifyIssuedBy(Path("ca.crt"), Path("x.crt"), CertKind::kClient);
  ASSERT_NE(problem, std::nullopt);
  EXPECT_THAT(*problem, HasSubstr("unable to get local issuer certificate"));
}

TEST_F(PkiTest, ServerCertificateNamesLocalhostAndTheGivenNames) {
  Issue("fleetwave-broker", CertKind::kServer, {"mqtt.example.com", "10.0.0.7"});
  EXPECT_EQ(VerifyIssuedBy(Path("ca.crt"), Path("fleetwave-broker.crt"), CertKind::kServer),
            std::nullopt);
  Cert cert = ReadCert(Path("fleetwave-broker.crt"));
  EXPECT_EQ(X509_get_extended_key_usage(cert.get()), static_cast<uint32_t>(XKU_SSL_SERVER));
  for (const char* host : {"localhost", "mqtt.example.com"})
    EXPECT_EQ(X509_check_host(cert.get(), host, 0, 0, nullptr), 1) << host;
  for (const char* ip : {"127.0.0.1", "10.0.0.7"})
    EXPECT_EQ(X509_check_ip_asc(cert.get(), ip, 0), 1) << ip;
  EXPECT_EQ(X509_check_host(cert.get(), "evil.example.com", 0, 0, nullptr), 0);
}

TEST_F(PkiTest, KeyFilesAre0600AndNeverOverwritten) {
  Issue("robot-0001");
  EXPECT_EQ(ModeOf(Path("ca.key")), 0600u);
  EXPECT_EQ(ModeOf(Path("robot-0001.key")), 0600u);
  EXPECT_EQ(ModeOf(Path("robot-0001.crt")), 0644u);
  try {
    CreateCa(Path("ca.key"), Path("new.crt"), "again", 30);
    ADD_FAILURE() << "an existing CA key was overwritten";
  } catch (const signing::KeyFileError& e) {
    EXPECT_THAT(e.what(), HasSubstr("already exists"));
  }
  EXPECT_FALSE(std::filesystem::exists(Path("new.crt")));
  EXPECT_THROW(Issue("robot-0001"), signing::KeyFileError);
}

TEST_F(PkiTest, AGroupOrWorldReadableCaKeyIsRefused) {
  for (mode_t mode : {0640, 0604, 0660}) {
    ::chmod(Path("ca.key").c_str(), mode);
    try {
      Issue("robot-0001");
      ADD_FAILURE() << "mode " << std::oct << mode << " was accepted";
    } catch (const signing::KeyFileError& e) {
      EXPECT_THAT(e.what(), HasSubstr(Path("ca.key")));
      EXPECT_THAT(e.what(), HasSubstr("chmod 600 " + Path("ca.key")));
      EXPECT_THAT(e.what(), Not(HasSubstr("PRIVATE KEY")));
    }
    EXPECT_FALSE(std::filesystem::exists(Path("robot-0001.key")));
  }
  ::chmod(Path("ca.key").c_str(), 0600);
  EXPECT_NO_THROW(Issue("robot-0001"));
}

TEST_F(PkiTest, AKeyThatIsNotTheCasIsRefused) {
  CreateCa(Path("other.key"), Path("other.crt"), "another CA", 30);
  IssueRequest r{"robot-0001", CertKind::kClient, {}, 10};
  EXPECT_THROW(IssueCertificate(Path("other.key"), Path("ca.crt"), r, Path("a.crt"), Path("a.key")),
               PkiError);
  Issue("robot-0002");
  EXPECT_THROW(IssueCertificate(Path("robot-0002.key"), Path("robot-0002.crt"), r, Path("b.crt"),
                                Path("b.key")),
               PkiError);  // not a CA
}

TEST_F(PkiTest, BadIdentitiesAreRejected) {
  for (const std::string& bad : std::vector<std::string>{"", "a/b", "a+b", "a#", "$aws",
                                                         "has space", "ä", std::string(129, 'x')}) {
    EXPECT_NE(CheckIdentity(bad), std::nullopt) << bad;
    IssueRequest r{bad, CertKind::kClient, {}, 10};
    EXPECT_THROW(
        IssueCertificate(Path("ca.key"), Path("ca.crt"), r, Path("bad.crt"), Path("bad.key")),
        std::invalid_argument)
        << bad;
  }
  EXPECT_THAT(*CheckIdentity("a/b"), HasSubstr("MQTT username"));
  // The registry's longest device id (128) is a valid identity, beyond X.520's 64.
  const std::string longest(128, 'd');
  EXPECT_EQ(CheckIdentity(longest), std::nullopt);
  Issue(longest);
  EXPECT_EQ(CommonName(Path(longest + ".crt")), longest);
  EXPECT_EQ(CheckIdentity("sensor-a:0001_x.y"), std::nullopt);
}

TEST_F(PkiTest, BadDaysAndServerNamesAreRejected) {
  EXPECT_NE(CheckDays(0), std::nullopt);
  EXPECT_NE(CheckDays(kMaxDays + 1), std::nullopt);
  EXPECT_EQ(CheckDays(1), std::nullopt);
  for (const char* bad : {"", "a b", "a,DNS:evil", "-x", "a..b", "x/y"})
    EXPECT_NE(CheckServerName(bad), std::nullopt) << bad;
  for (const char* good : {"localhost", "mqtt.example.com", "*.example.com", "::1", "10.1.2.3"})
    EXPECT_EQ(CheckServerName(good), std::nullopt) << good;
}

// ---- Mosquitto configuration -----------------------------------------------------------------

TEST(AclText, DevicesGetTheirOwnTopicsAndTheControllerTheRest) {
  AclOptions o;
  const std::string acl = AclText(o);
  for (const char* line :
       {"pattern write $aws/things/%u/jobs/get\n", "pattern write $aws/things/%u/jobs/start-next\n",
        "pattern write $aws/things/%u/jobs/+/get\n", "pattern write $aws/things/%u/jobs/+/update\n",
        "pattern write fleetwave/things/%u/telemetry\n",
        "pattern read $aws/things/%u/jobs/start-next/+\n",
        "pattern read $aws/things/%u/jobs/notify-next\n",
        "pattern read $aws/things/%u/jobs/notify\n", "user fleetwave-controller\n",
        "topic read $aws/things/+/jobs/start-next\n", "topic read fleetwave/things/+/telemetry\n",
        "topic write $aws/things/+/jobs/+/update/accepted\n",
        "topic write $aws/things/+/jobs/notify-next\n"})
    EXPECT_THAT(acl, HasSubstr(line));
  // No rule grants a wildcard over the root, and no simulator unless asked.
  std::istringstream lines(acl);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line[0] != '#') {
      EXPECT_THAT(line, Not(HasSubstr("#")));
    }
  EXPECT_THAT(acl, Not(HasSubstr("fleetwave-simulator")));

  o.simulator_identity = "fleetwave-simulator";
  o.jobs_root = "fleet/jobs";
  o.telemetry_root = "fleet/tm";
  const std::string with_sim = AclText(o);
  EXPECT_THAT(with_sim, HasSubstr("user fleetwave-simulator\ntopic write fleet/jobs/+/jobs/get\n"));
  EXPECT_THAT(with_sim, HasSubstr("topic read fleet/jobs/+/jobs/notify-next\n"));
  EXPECT_THAT(with_sim, HasSubstr("pattern write fleet/tm/%u/telemetry\n"));
  EXPECT_THAT(with_sim, HasSubstr("rehearsals and tests only"));
}

TEST(AclText, BadRootsAndIdentitiesAreRejected) {
  for (const char* root : {"", "a/+/b", "a/#", "/a", "a/", "a//b", "a b", "%u", "a\nb"}) {
    AclOptions o;
    o.jobs_root = root;
    EXPECT_NE(CheckAclOptions(o), std::nullopt) << root;
    EXPECT_THROW(AclText(o), std::invalid_argument) << root;
    o = AclOptions();
    o.telemetry_root = root;
    EXPECT_NE(CheckAclOptions(o), std::nullopt) << root;
  }
  AclOptions o;
  o.controller_identity = "ctl/x";
  EXPECT_THAT(CheckAclOptions(o).value_or(""), HasSubstr("controller identity"));
  o = AclOptions();
  o.simulator_identity = o.controller_identity;
  EXPECT_THAT(CheckAclOptions(o).value_or(""), HasSubstr("must differ"));
  o.simulator_identity = "sim+";
  EXPECT_THAT(CheckAclOptions(o).value_or(""), HasSubstr("simulator identity"));
}

TEST(MosquittoConfText, RequiresClientCertificatesAndDeniesAnonymous) {
  BrokerConfig c;
  c.port = 18883;
  c.cafile = "/x/ca.crt";
  c.certfile = "/x/broker.crt";
  c.keyfile = "/x/broker.key";
  c.acl_file = "/x/acl";
  const std::string conf = MosquittoConfText(c);
  for (const char* line :
       {"listener 18883 127.0.0.1\n", "cafile /x/ca.crt\n", "certfile /x/broker.crt\n",
        "keyfile /x/broker.key\n", "require_certificate true\n", "use_identity_as_username true\n",
        "allow_anonymous false\n", "acl_file /x/acl\n", "persistence false\n"})
    EXPECT_THAT(conf, HasSubstr(line));
  EXPECT_THAT(conf, Not(HasSubstr("\nuser ")));

  c.persistence_dir = "/var/lib/fw";
  c.user = "mosquitto";
  c.bind_address = "0.0.0.0";
  const std::string persistent = MosquittoConfText(c);
  EXPECT_THAT(persistent, HasSubstr("persistence true\npersistence_location /var/lib/fw/\n"));
  EXPECT_THAT(persistent, HasSubstr("\nuser mosquitto\n"));
  EXPECT_THAT(persistent, HasSubstr("listener 18883 0.0.0.0\n"));

  c.port = 0;
  EXPECT_THROW(MosquittoConfText(c), std::invalid_argument);
  c.port = 1883;
  c.acl_file = "/x/acl\nallow_anonymous true";
  EXPECT_NE(CheckBrokerConfig(c), std::nullopt);
  c.acl_file = "";
  EXPECT_NE(CheckBrokerConfig(c), std::nullopt);
}

}  // namespace
}  // namespace pki
