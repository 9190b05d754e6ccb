// The controller's HTTP side (cpp-httplib): health and readiness, Prometheus metrics, the JSON
// API, approval links and the console page. README ("HTTP API") lists every endpoint.
//
// Everything it shows is read from the database per request (the source of truth), so any
// controller — leader or standby — answers the same. Mutating API endpoints need
// `Authorization: Bearer <admin token>` and are off when no token is configured; approval links
// carry their own signed, one-use token. Bad requests get a 4xx JSON error naming the problem
// before any database work, so a flood of them costs little; requests are served by a bounded
// pool of threads, each with at most one database connection.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <pqxx/connection>

namespace controller {

struct HttpOptions {
  std::string address = "127.0.0.1:8080";  // host:port to listen on; port 0 picks a free one
  std::string db;                          // libpq connection string
  std::string mqtt_uri;                    // the broker /readyz checks (tcp://host:port)
  std::string admin_token;                 // empty: pause/resume/abort over HTTP are off
  int threads = 8;                         // concurrent requests (and database connections)
  size_t max_body_bytes = 16 * 1024;
  // "leader" or "standby" for /readyz; unset: "cli" (no controller behind the server).
  std::function<std::string()> role;
  // The /metrics body, given a database connection (null when none could be had); unset: 404.
  std::function<std::string(pqxx::connection*)> metrics;
};

// The host and port of "host:port" (port 0 to 65535); port -1 when malformed.
struct HostPort {
  std::string host;
  int port = -1;
};
HostPort ParseHostPort(const std::string& address);

class HttpServer {
 public:
  explicit HttpServer(HttpOptions options);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the address and serves on a thread of its own. Throws std::runtime_error naming the
  // address when it is malformed or cannot be bound (e.g. in use).
  void Start();
  // The bound port (after Start).
  int port() const;
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace controller
