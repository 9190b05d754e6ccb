#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <spdlog/spdlog.h>

#include "controller/cli_common.h"
#include "controller/engine.h"
#include "controller/http_server.h"
#include "controller/jobs_service.h"
#include "controller/metrics_scrape.h"
#include "fleet/plan.h"

namespace controller {

void AddController(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand(
      "controller", "Run the controller: the rollout machine and the devices' jobs API");
  cmd->footer(
      "Waits as standby until it holds the leader lease, then runs the never-ending rollout\n"
      "machine (cycles, waves, gates) and serves the AWS IoT Jobs MQTT API. Start two for\n"
      "failover: the standby takes over within the lease TTL. Stops cleanly on SIGINT/SIGTERM.\n"
      "Example:\n  fleetwave controller --plan plan.json --mqtt tcp://127.0.0.1:1883");
  auto o = std::make_shared<JobsServiceOptions>();
  auto e = std::make_shared<EngineOptions>();
  auto plan_file = std::make_shared<std::string>();
  cmd->add_option("--plan", *plan_file,
                  "Rollout plan (JSON file, see README); default: the documented default plan");
  auto lease_ttl = std::make_shared<int>(10);
  cmd->add_option("--lease-ttl", *lease_ttl, "Leader lease TTL in seconds (failover time)")
      ->capture_default_str()
      ->check(CLI::Range(2, 600));
  auto reconcile_ms = std::make_shared<int>(1000);
  cmd->add_option("--reconcile-interval-ms", *reconcile_ms, "Time between reconcile passes")
      ->capture_default_str()
      ->check(CLI::Range(50, 600000));
  auto http = std::make_shared<std::string>("127.0.0.1:8080");
  cmd->add_option("--http", *http,
                  "HOST:PORT of the console, JSON API, /metrics and approval links; port 0 "
                  "picks a free one; \"off\" serves no HTTP")
      ->envname("FLEETWAVE_HTTP")
      ->capture_default_str();
  auto* base_url = cmd->add_option("--approval-base-url", e->approval_base_url,
                                   "Base of approval links (default: http://<--http address>)");
  auto notice_key = std::make_shared<std::string>();
  cmd->add_option("--notice-key", *notice_key,
                  "Secret key file (fleetwave keys generate) that signs every job document; "
                  "without it documents go out unsigned")
      ->envname("FLEETWAVE_NOTICE_KEY");
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
  cmd->callback([&g, o, e, plan_file, lease_ttl, reconcile_ms, window_ms, retention_days, http,
                 base_url, notice_key] {
    if (!plan_file->empty()) {
      std::ifstream in(*plan_file);
      if (!in) throw UsageError("--plan " + *plan_file + ": cannot read the file");
      std::stringstream text;
      text << in.rdbuf();
      std::string error;
      auto plan = fleet::ParsePlan(text.str(), &error);
      if (!plan) throw UsageError("--plan " + *plan_file + ": " + error);
      e->plan = std::move(*plan);
    }
    if (*http != "off" && ParseHostPort(*http).port < 0)
      throw UsageError("--http \"" + *http +
                       "\" is invalid: use HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks a free "
                       "one), or off");
    e->lease_ttl = std::chrono::seconds(*lease_ttl);
    e->reconcile_interval = std::chrono::milliseconds(*reconcile_ms);
    for (const auto* root : {&o->topic_root, &o->telemetry_root}) {
      if (root->empty() || root->find_first_of("+#") != std::string::npos || root->back() == '/')
        throw UsageError("topic root \"" + *root +
                         "\" is invalid: use a topic without wildcards or a trailing /");
    }
    if (!notice_key->empty()) {
      try {
        o->notice_signer = std::make_shared<NoticeSigner>(signing::LoadSecretKeyFile(*notice_key));
      } catch (const signing::KeyFileError& err) {
        throw UsageError(std::string("--notice-key: ") + err.what());
      }
      spdlog::info("controller: job documents are signed with notice key {}",
                   o->notice_signer->key_id());
    } else {
      spdlog::warn(
          "controller: NO NOTICE KEY: job documents go out unsigned, and devices that verify "
          "notices will refuse them; give --notice-key FILE (see `fleetwave keys generate`)");
    }
    CheckBrokerSecurity(g, "controller");
    o->db = g.db;
    o->mqtt_uri = g.mqtt;
    o->tls_ca_file = g.tls_ca;
    o->tls_cert_file = g.tls_cert;
    o->tls_key_file = g.tls_key;
    o->batch_window = std::chrono::milliseconds(*window_ms);
    o->telemetry_retention_seconds = int64_t{*retention_days} * 86400;
    OpenDatabase(g);  // fail fast when the database is unreachable at start

    // Block SIGINT/SIGTERM in every thread; this one waits for them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    // HTTP first: its bound port makes the default base of approval links.
    std::unique_ptr<HttpServer> server;
    std::atomic<const Engine*> running{nullptr};  // read by /readyz's role
    if (*http != "off") {
      HttpOptions h;
      h.address = *http;
      h.db = g.db;
      h.mqtt_uri = g.mqtt;
      if (const char* token = std::getenv("FLEETWAVE_ADMIN_TOKEN")) h.admin_token = token;
      h.role = [&running] {
        const Engine* engine = running.load();
        return engine && engine->stats().leading ? "leader" : "standby";
      };
      h.metrics = [&running](pqxx::connection* conn) {
        const Engine* engine = running.load();
        return engine ? RenderMetrics(*engine, conn) : RenderDatabaseMetrics(conn);
      };
      server = std::make_unique<HttpServer>(h);
      try {
        server->Start();
      } catch (const std::runtime_error& err) {
        throw UsageError(err.what());
      }
      if (base_url->count() == 0) {
        std::string host = ParseHostPort(*http).host;
        if (host == "0.0.0.0" || host == "::") {
          char name[256] = {};
          gethostname(name, sizeof name - 1);
          host = name;
        }
        if (host.find(':') != std::string::npos) host = "[" + host + "]";
        e->approval_base_url = "http://" + host + ":" + std::to_string(server->port());
      }
      if (h.admin_token.empty())
        spdlog::info(
            "http: FLEETWAVE_ADMIN_TOKEN is not set, so pause/resume/abort over HTTP are off");
    }

    Engine engine(*e, *o);
    // The server stops before the engine it asks goes away, also when Start() throws.
    struct StopServerFirst {
      HttpServer* server;
      ~StopServerFirst() {
        if (server) server->Stop();
      }
    } stop_server_first{server.get()};
    running = &engine;
    engine.Start();
    spdlog::info("controller: jobs under {} (telemetry {}) via {}; plan {}", o->topic_root,
                 o->telemetry_root, o->mqtt_uri, fleet::PlanToJson(e->plan));
    int signal = 0;
    sigwait(&signals, &signal);
    spdlog::info("controller: signal {}, stopping", signal);
    if (server) server->Stop();
    engine.Stop();
    auto s = engine.stats();
    spdlog::info("controller: stopped after {} reconcile passes ({} failed), leader {} time(s)",
                 s.passes, s.pass_errors, s.leaderships);
  });
}

}  // namespace controller
