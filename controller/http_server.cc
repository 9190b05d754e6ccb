#include "controller/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <regex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <httplib.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <pqxx/nontransaction>

#include "controller/approval_links.h"
#include "controller/approval_token.h"
#include "controller/console_page.h"
#include "controller/status_json.h"
#include "db/connection.h"
#include "db/rollout_queries.h"

namespace controller {
namespace {

using Json = nlohmann::json;

// ---- Responses -----------------------------------------------------------------------------

void SendJson(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(body.dump(2) + "\n", "application/json");
}

// {"error": {"status": 400, "message": "..."}}: every 4xx and 5xx of the API.
void SendError(httplib::Response& res, int status, const std::string& message) {
  SendJson(res, status, Json{{"error", {{"status", status}, {"message", message}}}});
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

void SendPage(httplib::Response& res, int status, const std::string& title,
              const std::string& body_html) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; style-src 'unsafe-inline'; "
                 "form-action 'self'");
  res.set_content(
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>" + HtmlEscape(title) +
          "</title><style>body{font:15px system-ui,sans-serif;max-width:44em;margin:3em auto;"
          "color:#222}button{font-size:15px;padding:.5em 1.4em;margin-right:1em}"
          ".approve{background:#2e7d32;color:#fff}.deny{background:#c62828;color:#fff}"
          "td{padding:.2em 1em .2em 0}</style></head><body><h1>" +
          HtmlEscape(title) + "</h1>" + body_html + "<p><a href=\"/\">fleetwave console</a></p>" +
          "</body></html>\n",
      "text/html; charset=utf-8");
}

bool WantsJson(const httplib::Request& req) {
  return req.get_header_value("Accept").find("application/json") != std::string::npos;
}

// ---- Request checks (before any database work) -----------------------------------------------

bool ValidRolloutId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == ':' || c == '-'))
      return false;
  }
  return true;
}

constexpr char kMalformedLink[] =
    "this approval link is not valid: it is not one fleetwave issues (check that it was copied "
    "whole)";

// A token as IssueApprovalToken makes them: 32 hex, '.', 1-18 digits, '.', 64 hex.
bool WellFormedToken(const std::string& token) {
  static const std::regex kToken("[0-9a-f]{32}\\.[0-9]{1,18}\\.[0-9a-f]{64}");
  return token.size() <= 120 && std::regex_match(token, kToken);
}

// A positive integer from text, or nullopt.
std::optional<int64_t> Positive(const std::string& text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || value <= 0) return std::nullopt;
  return value;
}

// The value of query parameter `name` as a positive integer: nullopt when absent; throws
// BadRequest naming the parameter when malformed.
struct BadRequest : std::runtime_error {
  using std::runtime_error::runtime_error;
};
std::optional<int64_t> PositiveParam(const httplib::Request& req, const std::string& name,
                                     int64_t max) {
  if (!req.has_param(name)) return std::nullopt;
  auto v = Positive(req.get_param_value(name));
  if (!v || *v > max)
    throw BadRequest("query parameter " + name + "=\"" + req.get_param_value(name) +
                     "\" is invalid: use an integer from 1 to " + std::to_string(max));
  return v;
}

// Same length and bytes, in time independent of where they differ.
bool TokensEqual(const std::string& given, const std::string& expected) {
  const std::string a = HashToken(given), b = HashToken(expected);
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Whether the broker accepts TCP connections at `uri` (tcp://host:port) within `timeout_ms`.
bool BrokerReachable(const std::string& uri, int timeout_ms, std::string* why) {
  std::string rest = uri;
  if (auto p = rest.find("://"); p != std::string::npos) rest = rest.substr(p + 3);
  HostPort hp = ParseHostPort(rest);
  if (hp.port <= 0) {
    *why = "cannot tell the broker's host and port from \"" + uri + "\"";
    return false;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(hp.host.c_str(), std::to_string(hp.port).c_str(), &hints, &found) != 0) {
    *why = "cannot resolve " + hp.host;
    return false;
  }
  bool ok = false;
  for (addrinfo* a = found; a && !ok; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      ok = poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
           err == 0;
    }
    close(fd);
  }
  freeaddrinfo(found);
  if (!ok) *why = "no connection to " + hp.host + ":" + std::to_string(hp.port);
  return ok;
}

}  // namespace

HostPort ParseHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return {};
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port_text = address.substr(colon + 1);
  int port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() ||
      port < 0 || port > 65535)
    return {};
  return {host, port};
}

// ---- The server --------------------------------------------------------------------------------

struct HttpServer::Impl {
  HttpOptions options;
  httplib::Server server;
  std::thread thread;
  int port = 0;

  // Database connections for the handlers: at most one per serving thread.
  std::mutex pool_mu;
  std::vector<std::unique_ptr<pqxx::connection>> idle;

  explicit Impl(HttpOptions o) : options(std::move(o)) {}

  // A connection for one request, returned to the pool afterwards unless it broke.
  class Conn {
   public:
    explicit Conn(Impl& impl) : impl_(impl) {
      {
        std::lock_guard lock(impl_.pool_mu);
        if (!impl_.idle.empty()) {
          conn_ = std::move(impl_.idle.back());
          impl_.idle.pop_back();
        }
      }
      if (!conn_ || !conn_->is_open()) conn_ = db::Connect(impl_.options.db);
    }
    ~Conn() {
      if (!conn_ || !conn_->is_open()) return;
      std::lock_guard lock(impl_.pool_mu);
      impl_.idle.push_back(std::move(conn_));
    }
    pqxx::connection& operator*() { return *conn_; }

   private:
    Impl& impl_;
    std::unique_ptr<pqxx::connection> conn_;
  };

  // Runs `f`, turning the db layer's errors into API errors.
  template <typename F>
  void Guard(httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const BadRequest& e) {
      SendError(res, 400, e.what());
    } catch (const db::NotFound& e) {
      SendError(res, 404, e.what());
    } catch (const db::Conflict& e) {
      SendError(res, 409, e.what());
    } catch (const db::Unavailable& e) {
      SendError(res, 503, std::string("database unavailable: ") + e.what());
    } catch (const db::Error& e) {
      SendError(res, 500, e.what());
    }
  }

  // ---- One handler per endpoint --------------------------------------------------------------

  void Healthz(const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  }

  void Readyz(const httplib::Request&, httplib::Response& res) {
    Json body = {{"role", options.role ? options.role() : "cli"}};
    bool ready = true;
    try {
      Conn conn(*this);
      pqxx::nontransaction(*conn).exec("select 1");
      body["database"] = "ok";
    } catch (const std::exception& e) {
      body["database"] = std::string("unavailable: ") + e.what();
      ready = false;
    }
    std::string why;
    if (BrokerReachable(options.mqtt_uri, 1000, &why)) {
      body["broker"] = "ok";
    } else {
      body["broker"] = "unavailable: " + why;
      ready = false;
    }
    body["ready"] = ready;
    SendJson(res, ready ? 200 : 503, body);
  }

  void Metrics(const httplib::Request&, httplib::Response& res) {
    std::optional<Conn> conn;
    try {
      conn.emplace(*this);
    } catch (const db::Error&) {
      // RenderMetrics reports the database as down.
    }
    res.set_content(options.metrics(conn ? &**conn : nullptr),
                    "text/plain; version=0.0.4; charset=utf-8");
  }

  void Status(const httplib::Request&, httplib::Response& res) {
    Guard(res, [&] {
      Conn conn(*this);
      SendJson(res, 200, ToJson(db::ReadStatus(*conn)));
    });
  }

  void Cycles(const httplib::Request& req, httplib::Response& res) {
    Guard(res, [&] {
      const int64_t limit = PositiveParam(req, "limit", 1000).value_or(20);
      Conn conn(*this);
      Json out = Json::array();
      for (const auto& c : db::ListCycles(*conn, limit)) out.push_back(ToJson(c));
      SendJson(res, 200, out);
    });
  }

  void CycleEvents(const httplib::Request& req, httplib::Response& res) {
    Guard(res, [&] {
      auto cycle = Positive(req.matches[1]);
      if (!cycle)
        throw BadRequest("cycle id \"" + std::string(req.matches[1]) +
                         "\" is invalid: use a positive integer, e.g. /api/v1/cycles/3/events");
      db::HistoryQuery query;
      query.cycle_id = cycle;
      query.limit = PositiveParam(req, "limit", 100000);
      Conn conn(*this);
      Json out = Json::array();
      for (const auto& e : db::ReadHistory(*conn, query).events) out.push_back(ToJson(e));
      SendJson(res, 200, out);
    });
  }

  void Rollouts(const httplib::Request& req, httplib::Response& res) {
    Guard(res, [&] {
      auto cycle = PositiveParam(req, "cycle", INT64_MAX);
      Conn conn(*this);
      Json out = Json::array();
      for (const auto& r : db::ListRollouts(*conn, cycle)) out.push_back(ToJson(r));
      SendJson(res, 200, out);
    });
  }

  void Rollout(const httplib::Request& req, httplib::Response& res) {
    Guard(res, [&] {
      const std::string id = req.matches[1];
      if (!ValidRolloutId(id))
        throw BadRequest("rollout id \"" + id +
                         "\" is invalid: use 1 to 64 of A-Z a-z 0-9 _ . : - (GET /api/v1/rollouts "
                         "lists them)");
      Conn conn(*this);
      SendJson(res, 200, ToJson(db::ShowRollout(*conn, id)));
    });
  }

  void RolloutCommand(const httplib::Request& req, httplib::Response& res) {
    Guard(res, [&] {
      if (options.admin_token.empty()) {
        SendError(res, 403,
                  "pause, resume and abort over HTTP are off: start the controller with "
                  "FLEETWAVE_ADMIN_TOKEN set, or use `fleetwave rollout pause|resume|abort`");
        return;
      }
      const std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      if (auth.compare(0, prefix.size(), prefix) != 0 ||
          !TokensEqual(auth.substr(prefix.size()), options.admin_token)) {
        res.set_header("WWW-Authenticate", "Bearer");
        SendError(res, 401,
                  auth.empty() ? "missing Authorization: Bearer <FLEETWAVE_ADMIN_TOKEN> header"
                               : "the bearer token is not the admin token");
        return;
      }
      const std::string id = req.matches[1];
      const std::string verb = req.matches[2];
      if (!ValidRolloutId(id))
        throw BadRequest("rollout id \"" + id +
                         "\" is invalid: use 1 to 64 of A-Z a-z 0-9 _ . : -");
      const fleet::Event event = verb == "pause"    ? fleet::Event::kOperatorPause
                                 : verb == "resume" ? fleet::Event::kOperatorResume
                                                    : fleet::Event::kOperatorAbort;
      Conn conn(*this);
      auto r = db::RunOperatorCommand(*conn, id, event, "http:" + req.remote_addr);
      spdlog::info("rollout {}: {} over HTTP from {}: {} -> {}", id, verb, req.remote_addr, r.from,
                   r.to);
      Json events = Json::array();
      for (const auto& e : r.events) events.push_back(ToJson(e));
      SendJson(res, 200, {{"rollout", id}, {"from", r.from}, {"to", r.to}, {"events", events}});
    });
  }

  // What an approval link is for, with approve and deny buttons.
  void ApprovalPage(const httplib::Request& req, httplib::Response& res) {
    const std::string token = req.matches[1];
    if (!WellFormedToken(token)) {
      SendPage(res, 404, "Approval link not valid", "<p>" + HtmlEscape(kMalformedLink) + "</p>");
      return;
    }
    try {
      Conn conn(*this);
      LinkCheck check = InspectApprovalLink(*conn, token);
      if (check.status != LinkStatus::kPending) {
        SendPage(res, LinkStatusCode(check.status), "Approval link not usable",
                 "<p>" + HtmlEscape(check.message) + "</p>");
        return;
      }
      const auto& a = *check.approval;
      db::RolloutDetail d = db::ShowRollout(*conn, a.rollout_id);
      std::string rows;
      for (const auto& w : d.waves) {
        rows += "<tr><td>wave " + std::to_string(w.wave) + "</td><td>" + HtmlEscape(w.state) +
                "</td><td>" + std::to_string(w.planned) + " devices</td><td>" +
                std::to_string(w.counts.succeeded) + " succeeded, " +
                std::to_string(w.counts.failed + w.counts.rejected + w.counts.timed_out) +
                " failed</td></tr>";
      }
      const std::string base = "/approvals/" + token;
      SendPage(res, 200, "Approve wave " + std::to_string(a.wave) + " of " + a.rollout_id + "?",
               "<p>Release <b>" + HtmlEscape(a.model + " " + a.version) + "</b>, rollout <b>" +
                   HtmlEscape(a.rollout_id) + "</b> (cycle " + std::to_string(a.cycle_id) +
                   "), state " + HtmlEscape(a.rollout_state) + ". Approving starts wave " +
                   std::to_string(a.wave) +
                   "; denying aborts the rollout and halts the release.</p><table>" + rows +
                   "</table><p><form method=\"post\" action=\"" + base +
                   "/approve\" style=\"display:inline\"><button class=\"approve\">Approve</button>"
                   "</form><form method=\"post\" action=\"" +
                   base +
                   "/deny\" style=\"display:inline\"><button class=\"deny\">Deny</button></form>"
                   "</p><p>The link works once.</p>");
    } catch (const db::Error& e) {
      SendPage(res, 503, "Database unavailable", "<p>" + HtmlEscape(e.what()) + "</p>");
    }
  }

  static int LinkStatusCode(LinkStatus s) {
    switch (s) {
      case LinkStatus::kPending:
        return 200;
      case LinkStatus::kUnknown:
        return 404;
      case LinkStatus::kForged:
        return 403;
      case LinkStatus::kExpired:
        return 410;
      case LinkStatus::kDecided:
        return 409;
    }
    return 400;
  }

  void ApprovalDecision(const httplib::Request& req, httplib::Response& res) {
    const std::string token = req.matches[1];
    const bool approve = req.matches[2] == "approve";
    auto reply = [&](int status, const std::string& title, const std::string& message) {
      if (WantsJson(req)) {
        if (status >= 400) {
          SendError(res, status, message);
        } else {
          SendJson(res, status,
                   {{"decided", approve ? "approved" : "denied"}, {"message", message}});
        }
      } else {
        SendPage(res, status, title, "<p>" + HtmlEscape(message) + "</p>");
      }
    };
    if (!WellFormedToken(token)) {
      reply(404, "Approval link not valid", kMalformedLink);
      return;
    }
    try {
      Conn conn(*this);
      LinkDecision d = DecideApprovalLink(*conn, token, approve, "link:" + req.remote_addr);
      if (!d.result) {
        reply(LinkStatusCode(d.check.status), "Approval link not usable", d.check.message);
        return;
      }
      const auto& a = *d.check.approval;
      spdlog::info("rollout {} wave {}: {} by approval link from {}: {} -> {}", a.rollout_id,
                   a.wave, approve ? "approved" : "denied", req.remote_addr, d.result->from,
                   d.result->to);
      reply(200, approve ? "Approved" : "Denied",
            "wave " + std::to_string(a.wave) + " of rollout " + a.rollout_id + " (" + a.model +
                " " + a.version + ") " + (approve ? "approved" : "denied") + "; the rollout is " +
                d.result->to + " (the controller acts on it within one reconcile pass)");
    } catch (const db::Conflict& e) {
      reply(409, "Approval not applied", e.what());
    } catch (const db::Error& e) {
      reply(503, "Database unavailable", e.what());
    }
  }

  void Console(const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; img-src data:");
    res.set_content(kConsolePage, "text/html; charset=utf-8");
  }

  void Route() {
    using H = void (Impl::*)(const httplib::Request&, httplib::Response&);
    auto bind = [this](H h) {
      return
          [this, h](const httplib::Request& req, httplib::Response& res) { (this->*h)(req, res); };
    };
    server.Get("/", bind(&Impl::Console));
    server.Get("/healthz", bind(&Impl::Healthz));
    server.Get("/readyz", bind(&Impl::Readyz));
    if (options.metrics) server.Get("/metrics", bind(&Impl::Metrics));
    server.Get("/api/v1/status", bind(&Impl::Status));
    server.Get("/api/v1/cycles", bind(&Impl::Cycles));
    server.Get(R"(/api/v1/cycles/([^/]+)/events)", bind(&Impl::CycleEvents));
    server.Get("/api/v1/rollouts", bind(&Impl::Rollouts));
    server.Get(R"(/api/v1/rollouts/([^/]+))", bind(&Impl::Rollout));
    server.Post(R"(/api/v1/rollouts/([^/]+)/(pause|resume|abort))", bind(&Impl::RolloutCommand));
    server.Get(R"(/approvals/([^/]+))", bind(&Impl::ApprovalPage));
    server.Post(R"(/approvals/([^/]+)/(approve|deny))", bind(&Impl::ApprovalDecision));
    // A decision is a POST; a browser opening an approve/deny URL lands on the page instead.
    server.Get(R"(/approvals/([^/]+)/(approve|deny))",
               [](const httplib::Request& req, httplib::Response& res) {
                 res.set_redirect("/approvals/" + std::string(req.matches[1]), 303);
               });

    // Anything else: a JSON 404 naming the method and path (cpp-httplib answers 404 for a known
    // path with another method too; the message says which methods exist).
    server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;  // a handler's own error
      std::string message;
      switch (res.status) {
        case 404:
          message = "no endpoint " + req.method + " " + req.path +
                    " (GET /healthz, /readyz, /metrics, /api/v1/status, /api/v1/rollouts[/ID], "
                    "/api/v1/cycles[/ID/events]; POST /api/v1/rollouts/ID/pause|resume|abort)";
          break;
        case 413:
          message = "request body too large";
          break;
        case 400:
          message = "malformed HTTP request";
          break;
        default:
          message = "HTTP error " + std::to_string(res.status);
      }
      SendError(res, res.status, message);
    });
    server.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown error";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          spdlog::warn("http: {} {} failed: {}", req.method, req.path, what);
          SendError(res, 500, "internal error: " + what);
        });
  }
};

HttpServer::HttpServer(HttpOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start() {
  Impl& i = *impl_;
  HostPort hp = ParseHostPort(i.options.address);
  if (hp.port < 0 || hp.host.empty())
    throw std::runtime_error("--http \"" + i.options.address +
                             "\" is invalid: use HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks a "
                             "free one)");
  const int threads = std::max(1, i.options.threads);
  i.server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  i.server.set_payload_max_length(i.options.max_body_bytes);
  i.server.set_read_timeout(5, 0);
  i.server.set_write_timeout(5, 0);
  i.server.set_keep_alive_max_count(100);
  // SO_REUSEADDR (a restarted controller binds at once) but not cpp-httplib's default
  // SO_REUSEPORT, with which a second controller on the same port would silently share it.
  i.server.set_socket_options([](int fd) {
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  i.Route();
  i.port = hp.port == 0 ? i.server.bind_to_any_port(hp.host)
                        : (i.server.bind_to_port(hp.host, hp.port) ? hp.port : -1);
  if (i.port <= 0)
    throw std::runtime_error("cannot listen on " + i.options.address +
                             " (in use, or not an address of this machine): choose another with "
                             "--http HOST:PORT");
  i.thread = std::thread([&i] { i.server.listen_after_bind(); });
  // stop() before the listening thread runs would be lost (cpp-httplib 0.11 has no
  // wait_until_ready), and Stop() would then wait for ever.
  while (!i.server.is_running()) std::this_thread::yield();
  spdlog::info("http: serving on http://{}:{}/ (console, /api/v1, /metrics)", hp.host, i.port);
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  if (!impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace controller
