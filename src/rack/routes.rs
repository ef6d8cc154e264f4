//! The rack API route table: every path the stock `convox` CLI (or anything
//! else) can reach on a Convox v3 rack, mapped to a named operation.
//!
//! Policy is written against operation names ("exec", "releases info"), not
//! paths, so this module is the single place that knows the rack's URL
//! layout. Anything not in [`ROUTES`] is unknown and must be denied, which is
//! what closes `convox api get <path>` and future rack routes by default.
//!
//! Matching mirrors the rack's gorilla/mux router: routes are tried in table
//! order, methods match exactly (HEAD is not GET), and websocket routes match
//! only a GET carrying exactly `Upgrade: websocket`. It is deliberately
//! stricter in one place: a websocket upgrade aimed at a plain REST path does
//! not match (the rack would serve it as REST), so an upgrade can never be
//! authorised as something it is not. The module is pure: no I/O.

use std::sync::OnceLock;

/// How a route is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMethod {
    Get,
    Post,
    Put,
    Delete,
    Head,
    Options,
    /// HTTP GET carrying exactly `Upgrade: websocket`; the rack registers
    /// these as GET plus a header matcher, so a plain GET does not match.
    Socket,
    /// Reverse-proxy paths that accept every method and may upgrade
    /// (`/kubernetes/*`, `/v2/*`, `/custom/http/proxy/*`).
    Any,
}

impl RouteMethod {
    /// The label used in the README table and in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMethod::Get => "GET",
            RouteMethod::Post => "POST",
            RouteMethod::Put => "PUT",
            RouteMethod::Delete => "DELETE",
            RouteMethod::Head => "HEAD",
            RouteMethod::Options => "OPTIONS",
            RouteMethod::Socket => "SOCKET",
            RouteMethod::Any => "ANY",
        }
    }

    /// How the router classifies a request: `None` for a method that only
    /// the reverse proxies accept, and for an upgrade on anything but GET.
    fn of_request(method: &http::Method, websocket: bool) -> Option<RouteMethod> {
        if websocket {
            return (*method == http::Method::GET).then_some(RouteMethod::Socket);
        }
        match method.as_str() {
            "GET" => Some(RouteMethod::Get),
            "POST" => Some(RouteMethod::Post),
            "PUT" => Some(RouteMethod::Put),
            "DELETE" => Some(RouteMethod::Delete),
            "HEAD" => Some(RouteMethod::Head),
            "OPTIONS" => Some(RouteMethod::Options),
            _ => None,
        }
    }

    /// Whether a route with this method serves a request classified by
    /// [`RouteMethod::of_request`].
    fn accepts(self, request: Option<RouteMethod>) -> bool {
        self == RouteMethod::Any || Some(self) == request
    }
}

/// What kind of stream a route carries; the proxy picks its relay mode from
/// this, and the README documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A normal JSON or `ok` exchange.
    None,
    /// Websocket, server to client only (logs).
    WsOut,
    /// Websocket in both directions without an exit code.
    WsBidi,
    /// Websocket in both directions that ends with the exit-code marker
    /// frame (exec, instance shell); frames must be relayed 1:1.
    WsExit,
    /// Streamed (chunked) response body.
    RespBody,
    /// Streamed request body, possibly hundreds of MB.
    ReqBody,
    /// A reverse proxy behind the rack host: anything goes, upgrades included.
    ReverseProxy,
}

impl Stream {
    /// The label used in the README table; empty for [`Stream::None`].
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::None => "",
            Stream::WsOut => "WS out",
            Stream::WsBidi => "WS bidi",
            Stream::WsExit => "WS bidi + exit code",
            Stream::RespBody => "streamed response",
            Stream::ReqBody => "streamed request",
            Stream::ReverseProxy => "reverse proxy",
        }
    }
}

/// One rack route.
///
/// `pattern` segments are literals, `{name}` (exactly one segment),
/// `{name}.tgz` (one segment with that suffix and a non-empty stem; the
/// parameter is the stem) or a final `{name*}` (one or more segments joined
/// with `/`).
#[derive(Debug)]
pub struct Route {
    pub method: RouteMethod,
    pub pattern: &'static str,
    /// The name policies refer to; several routes may share one.
    pub operation: &'static str,
    pub stream: Stream,
    /// Which convox CLI commands send it, as README markdown.
    pub commands: &'static str,
    /// Short remark (secrets in the response, side doors), may be empty.
    pub note: &'static str,
}

/// Every route the gateway knows, in the rack's registration order where it
/// matters. Numbers refer to convox-api.md §2.
pub static ROUTES: &[Route] = &[
    // §2.1 Apps, budget, configs
    Route {
        // 1
        method: RouteMethod::Get,
        pattern: "/auth",
        operation: "login",
        stream: Stream::None,
        commands: "`login` (console login probe)",
        note: "auth check only; answers `ok`",
    },
    Route {
        // 2
        method: RouteMethod::Get,
        pattern: "/apps",
        operation: "apps",
        stream: Stream::None,
        commands: "`apps`",
        note: "",
    },
    Route {
        // 3
        method: RouteMethod::Post,
        pattern: "/apps",
        operation: "apps create",
        stream: Stream::None,
        commands: "`apps create`, `apps import`",
        note: "",
    },
    Route {
        // 4
        method: RouteMethod::Get,
        pattern: "/apps/{app}",
        operation: "apps info",
        stream: Stream::None,
        commands: "`apps info`, `apps params`, `releases`, `apps export`, `apps import`, \
                   `ssl update`; status polling by `deploy`, `releases promote`, \
                   `releases rollback`, `env set --promote`, `apps create`, `apps delete`, \
                   `scale`, `services update`",
        note: "",
    },
    Route {
        // 5
        method: RouteMethod::Put,
        pattern: "/apps/{app}",
        operation: "apps update",
        stream: Stream::None,
        commands: "`apps lock`, `apps unlock`, `apps params set`, `apps import`",
        note: "form `lock`, `parameters`",
    },
    Route {
        // 6
        method: RouteMethod::Delete,
        pattern: "/apps/{app}",
        operation: "apps delete",
        stream: Stream::None,
        commands: "`apps delete`",
        note: "",
    },
    Route {
        // 7
        method: RouteMethod::Post,
        pattern: "/apps/{app}/cancel",
        operation: "apps cancel",
        stream: Stream::None,
        commands: "`apps cancel`",
        note: "",
    },
    Route {
        // 8
        method: RouteMethod::Get,
        pattern: "/apps/{app}/diagnose",
        operation: "apps diagnose",
        stream: Stream::None,
        commands: "`deploy-debug`",
        note: "",
    },
    Route {
        // 9
        method: RouteMethod::Socket,
        pattern: "/apps/{app}/logs",
        operation: "logs",
        stream: Stream::WsOut,
        commands: "`logs` (without `-s`); log tail while `deploy`, `releases promote`, \
                   `scale` wait",
        note: "",
    },
    Route {
        // 10
        method: RouteMethod::Get,
        pattern: "/apps/{app}/manifest/services/{service}",
        operation: "apps manifest",
        stream: Stream::None,
        commands: "none (Console)",
        note: "",
    },
    Route {
        // 11
        method: RouteMethod::Get,
        pattern: "/apps/{app}/metrics",
        operation: "apps metrics",
        stream: Stream::None,
        commands: "none",
        note: "",
    },
    Route {
        // 12
        method: RouteMethod::Get,
        pattern: "/apps/{app}/metrics-by-service",
        operation: "apps metrics",
        stream: Stream::None,
        commands: "none",
        note: "",
    },
    Route {
        // 13
        method: RouteMethod::Get,
        pattern: "/apps/{app}/budget",
        operation: "budget show",
        stream: Stream::None,
        commands: "`budget show`; best-effort from `ps`, `services`, `scale`",
        note: "",
    },
    Route {
        // 14
        method: RouteMethod::Post,
        pattern: "/apps/{app}/budget",
        operation: "budget set",
        stream: Stream::None,
        commands: "`budget set`, `budget cap raise`",
        note: "",
    },
    Route {
        // 15
        method: RouteMethod::Delete,
        pattern: "/apps/{app}/budget",
        operation: "budget clear",
        stream: Stream::None,
        commands: "`budget clear`",
        note: "`ack_by` arrives as a form body on the DELETE",
    },
    Route {
        // 16
        method: RouteMethod::Post,
        pattern: "/apps/{app}/budget/reset",
        operation: "budget reset",
        stream: Stream::None,
        commands: "`budget reset`",
        note: "",
    },
    Route {
        // 17
        method: RouteMethod::Get,
        pattern: "/apps/{app}/budget/shutdown-state",
        operation: "budget show",
        stream: Stream::None,
        commands: "`budget show`; best-effort from `ps`, `services`, `scale`",
        note: "",
    },
    Route {
        // 18
        method: RouteMethod::Post,
        pattern: "/apps/{app}/budget/simulate-shutdown",
        operation: "budget simulate-shutdown",
        stream: Stream::None,
        commands: "`budget simulate-shutdown`",
        note: "",
    },
    Route {
        // 19
        method: RouteMethod::Post,
        pattern: "/apps/{app}/budget/dismiss-recovery",
        operation: "budget dismiss-recovery",
        stream: Stream::None,
        commands: "`budget dismiss-recovery`",
        note: "",
    },
    Route {
        // 20
        method: RouteMethod::Get,
        pattern: "/apps/{app}/cost",
        operation: "cost",
        stream: Stream::None,
        commands: "`cost`, `budget set`",
        note: "",
    },
    Route {
        // 21
        method: RouteMethod::Get,
        pattern: "/apps/{app}/balancers",
        operation: "balancers",
        stream: Stream::None,
        commands: "`balancers`",
        note: "",
    },
    Route {
        // 22
        method: RouteMethod::Get,
        pattern: "/apps/{app}/configs",
        operation: "configs",
        stream: Stream::None,
        commands: "`configs`",
        note: "",
    },
    Route {
        // 23
        method: RouteMethod::Get,
        pattern: "/apps/{app}/configs/{config}",
        operation: "configs get",
        stream: Stream::None,
        commands: "`config get`; `env`, `env mask`, `releases info` read `cli-env-mask`",
        note: "",
    },
    Route {
        // 24
        method: RouteMethod::Put,
        pattern: "/apps/{app}/configs/{config}",
        operation: "configs set",
        stream: Stream::None,
        commands: "`config set`, `env mask set`, `env mask unset`",
        note: "form `value` (base64) may be secret",
    },
    // §2.2 Builds, objects, releases
    Route {
        // 25
        method: RouteMethod::Post,
        pattern: "/apps/{app}/builds",
        operation: "build",
        stream: Stream::None,
        commands: "`build`, `deploy`, `test`, `build --external`, `builds import-image`",
        note: "`url` must be `object://{app}/…`; with `external=true` the response's \
               `repository` contains the rack password",
    },
    Route {
        // 26
        method: RouteMethod::Get,
        pattern: "/apps/{app}/builds/{build}.tgz",
        operation: "builds export",
        stream: Stream::RespBody,
        commands: "`builds export`, `apps export`",
        note: "must stay before `builds/{build}`: a `.tgz` suffix means export",
    },
    Route {
        // 27
        method: RouteMethod::Get,
        pattern: "/apps/{app}/builds/{build}",
        operation: "builds info",
        stream: Stream::None,
        commands: "`builds info`, `releases manifest`; polled every 1 s by `build`, `deploy`",
        note: "",
    },
    Route {
        // 28
        method: RouteMethod::Post,
        pattern: "/apps/{app}/builds/import",
        operation: "builds import",
        stream: Stream::ReqBody,
        commands: "`builds import`, `apps import`",
        note: "raw `.tgz` body",
    },
    Route {
        // 29
        method: RouteMethod::Post,
        pattern: "/apps/{app}/builds/{build}/image",
        operation: "builds import-image",
        stream: Stream::None,
        commands: "`builds import-image`",
        note: "form `src-creds-pass` is a registry password; answers 202",
    },
    Route {
        // 30
        method: RouteMethod::Get,
        pattern: "/apps/{app}/builds",
        operation: "builds",
        stream: Stream::None,
        commands: "`builds`",
        note: "",
    },
    Route {
        // 31
        method: RouteMethod::Socket,
        pattern: "/apps/{app}/builds/{build}/logs",
        operation: "builds logs",
        stream: Stream::WsOut,
        commands: "`build`, `deploy`, `test`, `builds logs`",
        note: "",
    },
    Route {
        // 32
        method: RouteMethod::Put,
        pattern: "/apps/{app}/builds/{build}",
        operation: "builds update",
        stream: Stream::None,
        commands: "`build --external`, `builds import-image`",
        note: "build pods also call it in-cluster, not through the gateway",
    },
    Route {
        // 33
        method: RouteMethod::Delete,
        pattern: "/apps/{app}/objects/{key*}",
        operation: "objects delete",
        stream: Stream::None,
        commands: "none",
        note: "",
    },
    Route {
        // 34
        method: RouteMethod::Head,
        pattern: "/apps/{app}/objects/{key*}",
        operation: "objects exists",
        stream: Stream::None,
        commands: "none",
        note: "the rack requires the write role (HEAD is not GET)",
    },
    Route {
        // 35
        method: RouteMethod::Get,
        pattern: "/apps/{app}/objects/{key*}",
        operation: "objects fetch",
        stream: Stream::RespBody,
        commands: "none (build pods, in-cluster)",
        note: "",
    },
    Route {
        // 36
        method: RouteMethod::Get,
        pattern: "/apps/{app}/objects",
        operation: "objects",
        stream: Stream::None,
        commands: "none",
        note: "",
    },
    Route {
        // 37
        method: RouteMethod::Post,
        pattern: "/apps/{app}/objects/{key*}",
        operation: "objects store",
        stream: Stream::ReqBody,
        commands: "`build`, `deploy`, `test` (key `tmp/<hex>.tgz`)",
        note: "the app source tarball, can be hundreds of MB",
    },
    Route {
        // 38
        method: RouteMethod::Post,
        pattern: "/apps/{app}/releases",
        operation: "releases create",
        stream: Stream::None,
        commands: "`env set`, `env unset`, `env edit`, `releases rollback`, \
                   `releases create-from`, `apps cancel`, `apps import`, `build --external`, \
                   `builds import-image`",
        note: "form `env` carries the entire environment in cleartext",
    },
    Route {
        // 39
        method: RouteMethod::Get,
        pattern: "/apps/{app}/releases/{release}",
        operation: "releases info",
        stream: Stream::None,
        commands: "`env`, `env get`, `env set`, `env unset`, `env edit`, `releases info`, \
                   `releases manifest`, `releases rollback`, `releases create-from`, \
                   `apps cancel`",
        note: "response contains the full env in cleartext",
    },
    Route {
        // 40
        method: RouteMethod::Get,
        pattern: "/apps/{app}/releases",
        operation: "releases",
        stream: Stream::None,
        commands: "`releases`, `releases promote` (no id), `env` (`limit=1`)",
        note: "",
    },
    Route {
        // 41
        method: RouteMethod::Post,
        pattern: "/apps/{app}/releases/{release}/promote",
        operation: "releases promote",
        stream: Stream::None,
        commands: "`releases promote`, `deploy`, `releases rollback`, `releases create-from`, \
                   `env set --promote`, `apps import`",
        note: "",
    },
    // §2.3 Processes, files, logs, proxy
    Route {
        // 42
        method: RouteMethod::Post,
        pattern: "/apps/{app}/services/{service}/processes",
        operation: "run",
        stream: Stream::None,
        commands: "`run` (attached and `--detach`), `test`",
        note: "attached `run` sends `Command: sleep N` and the real command on the exec \
               websocket; `Image`, `Volumes`, `Environment`, `Privileged` headers are \
               accepted from any client",
    },
    Route {
        // 43
        method: RouteMethod::Get,
        pattern: "/apps/{app}/processes/{pid}",
        operation: "ps info",
        stream: Stream::None,
        commands: "`ps info`; polled every 1 s by `run`",
        note: "",
    },
    Route {
        // 44
        method: RouteMethod::Get,
        pattern: "/apps/{app}/processes",
        operation: "ps",
        stream: Stream::None,
        commands: "`ps`, `scale`; polled by `deploy`, `releases promote`",
        note: "",
    },
    Route {
        // 45
        method: RouteMethod::Delete,
        pattern: "/apps/{app}/processes/{pid}",
        operation: "ps stop",
        stream: Stream::None,
        commands: "`ps stop`; cleanup after attached `run`, `test`",
        note: "",
    },
    Route {
        // 46
        method: RouteMethod::Socket,
        pattern: "/apps/{app}/processes/{pid}/exec",
        operation: "exec",
        stream: Stream::WsExit,
        commands: "`exec`, `run` (attached), `test`",
        note: "command in the `Command` header; the rack prefers `?command=`, so query \
               strings must be refused",
    },
    Route {
        // 47
        method: RouteMethod::Socket,
        pattern: "/apps/{app}/processes/{pid}/logs",
        operation: "logs",
        stream: Stream::WsOut,
        commands: "none",
        note: "",
    },
    Route {
        // 48
        method: RouteMethod::Socket,
        pattern: "/apps/{app}/services/{service}/logs",
        operation: "logs",
        stream: Stream::WsOut,
        commands: "`logs -s <service>`",
        note: "",
    },
    Route {
        // 49
        method: RouteMethod::Delete,
        pattern: "/apps/{app}/processes/{pid}/files",
        operation: "files delete",
        stream: Stream::None,
        commands: "`start` (local development only)",
        note: "",
    },
    Route {
        // 50
        method: RouteMethod::Get,
        pattern: "/apps/{app}/processes/{pid}/files",
        operation: "files download",
        stream: Stream::RespBody,
        commands: "`cp <pid>:<path> <local>`",
        note: "tar stream",
    },
    Route {
        // 51
        method: RouteMethod::Post,
        pattern: "/apps/{app}/processes/{pid}/files",
        operation: "files upload",
        stream: Stream::ReqBody,
        commands: "`cp <local> <pid>:<path>`",
        note: "chunked tar stream",
    },
    Route {
        // 52
        method: RouteMethod::Socket,
        pattern: "/proxy/{host}/{port}",
        operation: "proxy",
        stream: Stream::WsBidi,
        commands: "`proxy`, `resources proxy`, `rack resources proxy`",
        note: "raw TCP tunnel to any host:port the rack can reach (it refuses only loopback, \
               link-local and metadata addresses); one websocket per connection",
    },
    Route {
        // 53
        method: RouteMethod::Any,
        pattern: "/custom/http/proxy/{path*}",
        operation: "proxy http",
        stream: Stream::ReverseProxy,
        commands: "none (Console)",
        note: "HTTP proxy into the cluster (`X-Host`, `X-Port`): a side door",
    },
    // §2.4 Resources, services
    Route {
        // 54
        method: RouteMethod::Socket,
        pattern: "/apps/{app}/resources/{resource}/console",
        operation: "resources console",
        stream: Stream::WsBidi,
        commands: "`resources console`",
        note: "database shell; no exit-code marker",
    },
    Route {
        // 55
        method: RouteMethod::Get,
        pattern: "/apps/{app}/resources/{resource}/data",
        operation: "resources export",
        stream: Stream::RespBody,
        commands: "`resources export`, `apps export`",
        note: "full data dump",
    },
    Route {
        // 56
        method: RouteMethod::Get,
        pattern: "/apps/{app}/resources/{resource}",
        operation: "resources info",
        stream: Stream::None,
        commands: "`resources info`, `resources url`, `resources proxy`",
        note: "response `url` contains database credentials",
    },
    Route {
        // 57
        method: RouteMethod::Put,
        pattern: "/apps/{app}/resources/{resource}/data",
        operation: "resources import",
        stream: Stream::ReqBody,
        commands: "`resources import`, `apps import`",
        note: "overwrites the resource's data",
    },
    Route {
        // 58
        method: RouteMethod::Get,
        pattern: "/apps/{app}/resources",
        operation: "resources",
        stream: Stream::None,
        commands: "`resources`, `apps export`",
        note: "",
    },
    Route {
        // 59
        method: RouteMethod::Get,
        pattern: "/apps/{app}/services",
        operation: "services",
        stream: Stream::None,
        commands: "`services`, `restart`, `scale`, `ssl`, `budget show`, `ps`",
        note: "",
    },
    Route {
        // 60
        method: RouteMethod::Get,
        pattern: "/apps/{app}/services/{service}/metrics",
        operation: "services metrics",
        stream: Stream::None,
        commands: "none",
        note: "",
    },
    Route {
        // 61
        method: RouteMethod::Post,
        pattern: "/apps/{app}/services/{service}/restart",
        operation: "restart",
        stream: Stream::None,
        commands: "`restart` (once per service), `services restart`",
        note: "",
    },
    Route {
        // 62
        method: RouteMethod::Post,
        pattern: "/apps/{app}/services/{service}/scale-override",
        operation: "services scale-override",
        stream: Stream::None,
        commands: "none (Console)",
        note: "",
    },
    Route {
        // 63
        method: RouteMethod::Post,
        pattern: "/apps/{app}/services/{service}/triggers/disable",
        operation: "services triggers disable",
        stream: Stream::None,
        commands: "`services triggers disable`",
        note: "",
    },
    Route {
        // 64
        method: RouteMethod::Post,
        pattern: "/apps/{app}/services/{service}/triggers/enable",
        operation: "services triggers enable",
        stream: Stream::None,
        commands: "`services triggers enable`",
        note: "",
    },
    Route {
        // 65
        method: RouteMethod::Post,
        pattern: "/apps/{app}/services/{service}/triggers/threshold",
        operation: "services triggers threshold-set",
        stream: Stream::None,
        commands: "`services triggers threshold-set`",
        note: "",
    },
    Route {
        // 66
        method: RouteMethod::Put,
        pattern: "/apps/{app}/services/{service}",
        operation: "scale",
        stream: Stream::None,
        commands: "`scale`, `services update`",
        note: "",
    },
    // §2.5 Rack level: certificates, instances, registries, system, rack resources
    Route {
        // 67
        method: RouteMethod::Put,
        pattern: "/apps/{app}/ssl/{service}/{port}",
        operation: "ssl update",
        stream: Stream::None,
        commands: "`ssl update`",
        note: "",
    },
    Route {
        // 68
        method: RouteMethod::Post,
        pattern: "/certificates",
        operation: "certs import",
        stream: Stream::None,
        commands: "`certs import`",
        note: "form `key` is a private key",
    },
    Route {
        // 69
        method: RouteMethod::Delete,
        pattern: "/certificates/{certificate}",
        operation: "certs delete",
        stream: Stream::None,
        commands: "`certs delete`",
        note: "",
    },
    Route {
        // 70
        method: RouteMethod::Post,
        pattern: "/certificates/{certificate}/renew",
        operation: "certs renew",
        stream: Stream::None,
        commands: "`certs renew`",
        note: "",
    },
    Route {
        // 71
        method: RouteMethod::Post,
        pattern: "/certificates/generate",
        operation: "certs generate",
        stream: Stream::None,
        commands: "`certs generate`",
        note: "",
    },
    Route {
        // 72
        method: RouteMethod::Get,
        pattern: "/certificates",
        operation: "certs",
        stream: Stream::None,
        commands: "`certs`, `ssl`",
        note: "",
    },
    Route {
        // 73
        method: RouteMethod::Get,
        pattern: "/letsencrypt/config",
        operation: "letsencrypt config",
        stream: Stream::None,
        commands: "`letsencrypt dns route53`",
        note: "",
    },
    Route {
        // 74
        method: RouteMethod::Put,
        pattern: "/letsencrypt/config",
        operation: "letsencrypt config set",
        stream: Stream::None,
        commands: "`letsencrypt dns route53 add`, `update`, `delete`",
        note: "raw JSON body",
    },
    Route {
        // 75
        method: RouteMethod::Post,
        pattern: "/events",
        operation: "events send",
        stream: Stream::None,
        commands: "none (build pods, in-cluster)",
        note: "",
    },
    Route {
        // 76
        method: RouteMethod::Get,
        pattern: "/system/capacity",
        operation: "rack capacity",
        stream: Stream::None,
        commands: "none",
        note: "",
    },
    Route {
        // 77
        method: RouteMethod::Post,
        pattern: "/instances/keyroll",
        operation: "instances keyroll",
        stream: Stream::None,
        commands: "`instances keyroll`",
        note: "response contains a private key",
    },
    Route {
        // 78
        method: RouteMethod::Get,
        pattern: "/instances",
        operation: "instances",
        stream: Stream::None,
        commands: "`instances`",
        note: "",
    },
    Route {
        // 79
        method: RouteMethod::Socket,
        pattern: "/instances/{instance}/shell",
        operation: "instances ssh",
        stream: Stream::WsExit,
        commands: "`instances ssh`",
        note: "`Private-Key` header carries a base64 SSH private key",
    },
    Route {
        // 80
        method: RouteMethod::Delete,
        pattern: "/instances/{instance}",
        operation: "instances terminate",
        stream: Stream::None,
        commands: "`instances terminate`",
        note: "",
    },
    Route {
        // 81
        method: RouteMethod::Post,
        pattern: "/registries",
        operation: "registries add",
        stream: Stream::None,
        commands: "`registries add`",
        note: "form `password` is a registry password",
    },
    Route {
        // 82
        method: RouteMethod::Get,
        pattern: "/registries",
        operation: "registries",
        stream: Stream::None,
        commands: "`registries`",
        note: "",
    },
    Route {
        // 83
        method: RouteMethod::Delete,
        pattern: "/registries/{registry*}",
        operation: "registries remove",
        stream: Stream::None,
        commands: "`registries remove`",
        note: "the server name may contain `/`",
    },
    Route {
        // 84
        method: RouteMethod::Any,
        pattern: "/v2/{path*}",
        operation: "registry proxy",
        stream: Stream::ReverseProxy,
        commands: "none (docker clients)",
        note: "the rack's docker registry: a side door",
    },
    Route {
        // 85
        method: RouteMethod::Get,
        pattern: "/system",
        operation: "rack",
        stream: Stream::None,
        commands: "`rack`, `version`, `rack update`, `rack params`, `rack params set`, \
                   `rack scale`, `rack access`; version probe in `build`, `deploy`, `env set`, \
                   `builds import`, `certs import`, `ssl` and others",
        note: "v2 racks include `parameters`, which may hold secrets",
    },
    Route {
        // 86
        method: RouteMethod::Put,
        pattern: "/system",
        operation: "rack update",
        stream: Stream::None,
        commands: "`rack update`, `rack params set`, `rack scale`",
        note: "also serves `rack params set` and `rack scale`; v3 racks answer 501",
    },
    Route {
        // 87
        method: RouteMethod::Socket,
        pattern: "/system/logs",
        operation: "rack logs",
        stream: Stream::WsOut,
        commands: "`rack logs`, `instances keyroll` (wait)",
        note: "v3 racks answer in-band `ERROR: unimplemented`",
    },
    Route {
        // 88
        method: RouteMethod::Get,
        pattern: "/system/metrics",
        operation: "rack metrics",
        stream: Stream::None,
        commands: "none",
        note: "",
    },
    Route {
        // 89
        method: RouteMethod::Put,
        pattern: "/system/jwt/rotate",
        operation: "rack access key rotate",
        stream: Stream::None,
        commands: "`rack access key rotate`",
        note: "the rack requires the admin role",
    },
    Route {
        // 90
        method: RouteMethod::Post,
        pattern: "/system/jwt/token",
        operation: "rack access",
        stream: Stream::None,
        commands: "`rack access`",
        note: "mints a rack JWT that bypasses the gateway",
    },
    Route {
        // 91
        method: RouteMethod::Get,
        pattern: "/system/processes",
        operation: "rack ps",
        stream: Stream::None,
        commands: "`rack ps`",
        note: "",
    },
    Route {
        // 92
        method: RouteMethod::Get,
        pattern: "/system/releases",
        operation: "rack releases",
        stream: Stream::None,
        commands: "`rack releases`",
        note: "",
    },
    Route {
        // 93
        method: RouteMethod::Post,
        pattern: "/system/karpenter/cleanup",
        operation: "rack karpenter cleanup",
        stream: Stream::None,
        commands: "`rack karpenter cleanup`",
        note: "",
    },
    Route {
        // 94
        method: RouteMethod::Post,
        pattern: "/resources",
        operation: "rack resources create",
        stream: Stream::None,
        commands: "`rack resources create`",
        note: "",
    },
    Route {
        // 95
        method: RouteMethod::Delete,
        pattern: "/resources/{resource}",
        operation: "rack resources delete",
        stream: Stream::None,
        commands: "`rack resources delete`",
        note: "",
    },
    Route {
        // 96
        method: RouteMethod::Get,
        pattern: "/resources/{resource}",
        operation: "rack resources info",
        stream: Stream::None,
        commands: "`rack resources info`, `rack resources url`, `rack resources proxy`; \
                   waits in `rack resources create`, `delete`, `link`, `update`",
        note: "response `url` contains credentials",
    },
    Route {
        // 97
        method: RouteMethod::Post,
        pattern: "/resources/{resource}/links",
        operation: "rack resources link",
        stream: Stream::None,
        commands: "`rack resources link`",
        note: "",
    },
    Route {
        // 98
        method: RouteMethod::Get,
        pattern: "/resources",
        operation: "rack resources",
        stream: Stream::None,
        commands: "`rack resources`",
        note: "",
    },
    Route {
        // 99
        method: RouteMethod::Options,
        pattern: "/resources",
        operation: "rack resources types",
        stream: Stream::None,
        commands: "`rack resources types`, `rack resources options`",
        note: "the rack requires the write role (OPTIONS is not GET)",
    },
    Route {
        // 100
        method: RouteMethod::Delete,
        pattern: "/resources/{resource}/links/{app}",
        operation: "rack resources unlink",
        stream: Stream::None,
        commands: "`rack resources unlink`",
        note: "",
    },
    Route {
        // 101
        method: RouteMethod::Put,
        pattern: "/resources/{resource}",
        operation: "rack resources update",
        stream: Stream::None,
        commands: "`rack resources update`",
        note: "",
    },
    // §2.6 Paths on the rack host outside the rack's own route table
    Route {
        method: RouteMethod::Any,
        pattern: "/kubernetes",
        operation: "kubernetes",
        stream: Stream::ReverseProxy,
        commands: "kubectl via `rack kubeconfig`",
        note: "kube-apiserver proxy with the rack password: a side door",
    },
    Route {
        method: RouteMethod::Any,
        pattern: "/kubernetes/{path*}",
        operation: "kubernetes",
        stream: Stream::ReverseProxy,
        commands: "kubectl via `rack kubeconfig`",
        note: "kube-apiserver proxy with the rack password: a side door",
    },
    Route {
        method: RouteMethod::Any,
        pattern: "/v2",
        operation: "registry proxy",
        stream: Stream::ReverseProxy,
        commands: "none (docker clients)",
        note: "docker's API version check",
    },
    Route {
        method: RouteMethod::Get,
        pattern: "/machines",
        operation: "probe",
        stream: Stream::None,
        commands: "every websocket command (HEAD CLI, `/apps/…` paths)",
        note: "throwaway request before a websocket; the rack answers 404",
    },
    Route {
        method: RouteMethod::Get,
        pattern: "/racks",
        operation: "probe",
        stream: Stream::None,
        commands: "every websocket command (3.18.11 CLI; HEAD for non-app paths)",
        note: "throwaway request before a websocket; the rack answers 404",
    },
];

/// Path parameters of a match, under their canonical names
/// (`app`, `service`, `pid`, `build`, `release`, `resource`, `key`, `config`,
/// `instance`, `certificate`, `registry`, `host`, `port`, `path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// The value of parameter `name`; a catch-all's segments are joined
    /// with `/` and a `{build}.tgz` value is the stem.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The parameters in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.0.iter().map(|(n, v)| (*n, v.as_str()))
    }
}

/// A matched route and the values of its path parameters.
#[derive(Debug)]
pub struct RouteMatch {
    pub route: &'static Route,
    pub params: Params,
}

/// Finds the route for a request, or `None` when the rack has no such route
/// (the caller must deny it).
///
/// `segments` are the percent-decoded, already validated path segments
/// (no empty, `.` or `..` segment), e.g. `/apps/web/processes/p-1/exec` is
/// `["apps", "web", "processes", "p-1", "exec"]`. `websocket` is true when
/// the request is a GET with exactly `Upgrade: websocket`.
pub fn match_route(
    method: &http::Method,
    websocket: bool,
    segments: &[String],
) -> Option<RouteMatch> {
    let request = RouteMethod::of_request(method, websocket);
    table()
        .candidates(segments.first()?)?
        .iter()
        .find(|pattern| pattern.method.accepts(request) && pattern.matches(segments))
        .map(|pattern| RouteMatch {
            route: pattern.route,
            params: pattern.capture(segments),
        })
}

/// All distinct operation names, sorted; policy files are validated against
/// this list.
pub fn operations() -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = ROUTES.iter().map(|r| r.operation).collect();
    ops.sort_unstable();
    ops.dedup();
    ops
}

/// The README's route table as GitHub markdown.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Method | Path | Operation | Stream | CLI commands | Notes |\n\
         |---|---|---|---|---|---|\n",
    );
    for route in ROUTES {
        let cells = [
            route.method.as_str().to_owned(),
            format!("`{}`", route.pattern),
            format!("`{}`", route.operation),
            route.stream.as_str().to_owned(),
            route.commands.to_owned(),
            route.note.to_owned(),
        ];
        out.push('|');
        for cell in cells {
            out.push(' ');
            out.push_str(&cell.replace('|', "\\|"));
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

/// One segment of a route pattern.
#[derive(Debug)]
enum Segment {
    Literal(&'static str),
    /// `{name}`: exactly one segment.
    Param(&'static str),
    /// `{name}.tgz`: one segment with this suffix and a non-empty stem.
    Suffixed {
        name: &'static str,
        suffix: &'static str,
    },
    /// `{name*}`: the last pattern segment, one or more path segments.
    Rest(&'static str),
}

/// A route's pattern split once, with what a lookup filters on kept inline,
/// so matching a request allocates nothing until a route has matched.
#[derive(Debug)]
struct Pattern {
    route: &'static Route,
    method: RouteMethod,
    segments: Vec<Segment>,
    /// Whether the last segment is a [`Segment::Rest`].
    open: bool,
    /// How many segments capture a parameter.
    params: usize,
}

impl Pattern {
    fn parse(route: &'static Route) -> Pattern {
        let segments: Vec<Segment> = route
            .pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(Segment::parse)
            .collect();
        let open = matches!(segments.last(), Some(Segment::Rest(_)));
        let params = segments
            .iter()
            .filter(|s| !matches!(s, Segment::Literal(_)))
            .count();
        Pattern {
            route,
            method: route.method,
            segments,
            open,
            params,
        }
    }

    fn matches(&self, path: &[String]) -> bool {
        let fits = if self.open {
            path.len() >= self.segments.len()
        } else {
            path.len() == self.segments.len()
        };
        fits && self
            .segments
            .iter()
            .zip(path)
            .all(|(seg, value)| seg.matches(value))
    }

    /// Extracts the parameters of a path that [`Pattern::matches`].
    fn capture(&self, path: &[String]) -> Params {
        let mut params = Vec::with_capacity(self.params);
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(_) => {}
                Segment::Param(name) => params.push((*name, path[i].clone())),
                Segment::Suffixed { name, suffix } => {
                    let stem = path[i].strip_suffix(suffix).unwrap_or(&path[i]);
                    params.push((*name, stem.to_owned()));
                }
                Segment::Rest(name) => params.push((*name, path[i..].join("/"))),
            }
        }
        Params(params)
    }
}

impl Segment {
    fn parse(raw: &'static str) -> Segment {
        let Some((name, after)) = raw
            .strip_prefix('{')
            .and_then(|inner| inner.split_once('}'))
        else {
            return Segment::Literal(raw);
        };
        match (name.strip_suffix('*'), after) {
            (Some(name), "") => Segment::Rest(name),
            (None, "") => Segment::Param(name),
            _ => Segment::Suffixed {
                name,
                suffix: after,
            },
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Segment::Literal(lit) => *lit == value,
            Segment::Param(_) | Segment::Rest(_) => true,
            Segment::Suffixed { suffix, .. } => {
                value.len() > suffix.len() && value.ends_with(suffix)
            }
        }
    }
}

/// [`ROUTES`] prepared for matching, built on first use.
#[derive(Debug)]
struct Table {
    /// Patterns grouped by their first pattern segment (always a literal),
    /// in table order within a group, groups sorted by that literal: a
    /// lookup only tries the handful of routes that can possibly match.
    by_first: Vec<(&'static str, Vec<Pattern>)>,
}

impl Table {
    fn build() -> Table {
        let mut by_first: Vec<(&'static str, Vec<Pattern>)> = Vec::new();
        for route in ROUTES {
            let pattern = Pattern::parse(route);
            let Some(&Segment::Literal(first)) = pattern.segments.first() else {
                continue;
            };
            match by_first.iter_mut().find(|(lit, _)| *lit == first) {
                Some((_, group)) => group.push(pattern),
                None => by_first.push((first, vec![pattern])),
            }
        }
        by_first.sort_unstable_by_key(|(lit, _)| *lit);
        Table { by_first }
    }

    fn candidates(&self, first: &str) -> Option<&[Pattern]> {
        let at = self
            .by_first
            .binary_search_by(|(lit, _)| (*lit).cmp(first))
            .ok()?;
        Some(&self.by_first[at].1)
    }
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::build)
}

#[cfg(test)]
mod tests;
