#include <signal.h>

#include <chrono>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "controller/cli_common.h"
#include "controller/jobs_service.h"

namespace controller {

void AddController(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("controller", "Run the controller: serve the devices' jobs API");
  cmd->footer(
      "Serves the AWS IoT Jobs MQTT API from PostgreSQL (group commit) and relays notices.\n"
      "Stops cleanly on SIGINT or SIGTERM.\n"
      "Example:\n  fleetwave controller --mqtt tcp://127.0.0.1:1883 --topic-root '$aws/things'");
  auto o = std::make_shared<JobsServiceOptions>();
  cmd->add_option("--topic-root", o->topic_root, "Root of the jobs topics")->capture_default_str();
  cmd->add_option("--telemetry-root", o->telemetry_root, "Root of the telemetry topics")
      ->capture_default_str();
  cmd->add_option("--client-id", o->client_id,
                  "MQTT client id; keep it stable so the broker holds requests while down")
      ->capture_default_str();
  cmd->add_option("--max-batch", o->max_batch, "Requests per database transaction")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--answer-qos", o->answer_qos, "QoS of answers (notices always use QoS 1)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1));
  auto window_ms = std::make_shared<int>(static_cast<int>(o->batch_window.count()));
  cmd->add_option("--batch-window-ms", *window_ms, "How long a batch gathers requests")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  auto retention_days = std::make_shared<int>(7);
  cmd->add_option("--telemetry-retention-days", *retention_days, "Telemetry kept this long")
      ->capture_default_str()
      ->check(CLI::Range(1, 3650));
  cmd->callback([&g, o, window_ms, retention_days] {
    for (const auto* root : {&o->topic_root, &o->telemetry_root}) {
      if (root->empty() || root->find_first_of("+#") != std::string::npos || root->back() == '/')
        throw UsageError("topic root \"" + *root +
                         "\" is invalid: use a topic without wildcards or a trailing /");
    }
    o->db = g.db;
    o->mqtt_uri = g.mqtt;
    o->batch_window = std::chrono::milliseconds(*window_ms);
    o->telemetry_retention_seconds = int64_t{*retention_days} * 86400;
    OpenDatabase(g);  // fail fast when the database is unreachable at start

    // Block SIGINT/SIGTERM in every thread; this one waits for them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    JobsService service(*o);
    service.Start();
    spdlog::info("controller: serving jobs under {} (telemetry {}) via {}", o->topic_root,
                 o->telemetry_root, o->mqtt_uri);
    if (!service.WaitReady(std::chrono::seconds(10)))
      spdlog::warn("controller: broker {} not reachable yet; retrying in the background",
                   o->mqtt_uri);
    int signal = 0;
    sigwait(&signals, &signal);
    spdlog::info("controller: signal {}, stopping", signal);
    service.Stop();
    auto s = service.stats();
    spdlog::info(
        "controller: served {} requests ({} accepted, {} rejected) in {} batches; {:.2f} s in "
        "the database, {:.2f} s publishing answers; {} notices sent",
        s.requests, s.accepted, s.rejected, s.batches, s.database_seconds, s.publish_seconds,
        s.notices_sent);
  });
}

}  // namespace controller
