// `fleetwave keys`: Ed25519 key pairs for the release key (offline) and the notice key (the
// controller's). No database.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "controller/cli_common.h"
#include "signing/signing.h"

namespace controller {

void AddKeys(CLI::App& app) {
  auto* keys = app.add_subcommand("keys", "Signing keys for releases and notices");
  keys->require_subcommand(1);

  auto* cmd = keys->add_subcommand("generate", "Create an Ed25519 key pair");
  cmd->footer(
      "Writes PREFIX.key (the secret key, mode 0600, never overwritten) and PREFIX.pub (the\n"
      "public key, for devices to trust) and prints the key id. Make two: a release key kept\n"
      "offline (signs manifests: `fleetwave release sign`) and a notice key for the controller\n"
      "(`fleetwave controller --notice-key`). Devices trust both public keys, each for its use.\n"
      "Example:\n  fleetwave keys generate --out /secure/release\n"
      "  fleetwave keys generate --out /etc/fleetwave/notice");
  auto prefix = std::make_shared<std::string>();
  cmd->add_option("--out", *prefix, "Path prefix of the two files")->required();
  cmd->callback([prefix] {
    if (prefix->empty() || prefix->back() == '/')
      throw UsageError("--out \"" + *prefix + "\" must name a file prefix, e.g. keys/release");
    for (const char* ext : {".key", ".pub"})
      if (std::filesystem::exists(*prefix + ext))
        throw UsageError("--out: " + *prefix + ext +
                         " already exists; keys are never overwritten: pick another prefix");
    signing::KeyPair pair = signing::GenerateKeyPair();
    try {
      signing::WriteSecretKeyFile(*prefix + ".key", pair.secret_key);
      signing::WritePublicKeyFile(*prefix + ".pub", pair.public_key);
    } catch (const signing::KeyFileError& err) {
      throw UsageError(std::string("--out: ") + err.what());
    }
    std::printf("key %s: secret %s.key (mode 0600), public %s.pub\n",
                pair.public_key.KeyId().c_str(), prefix->c_str(), prefix->c_str());
  });
}

}  // namespace controller
