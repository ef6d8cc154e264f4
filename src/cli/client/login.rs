//! The CLI's half of the browser login (the gateway's half is
//! [`crate::identity::login`]).
//!
//! The CLI keeps a random verifier and puts only its SHA-256 in the login
//! link, so the link and the one-time code it yields are useless to anyone
//! else. By default the code comes back to a listener on 127.0.0.1 through
//! the browser's redirect; with `--no-browser` (SSH sessions, a browser on
//! another machine) the gateway shows the code and the person pastes it.
//!
//! The browser's tab is answered only after the code has been exchanged, so
//! the page says whether the login actually worked.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::gateway::{Gateway, GatewayError, GatewayUrl};
use super::ClientError;
use crate::http::body::Body;

/// How long a login may take from the printed link to the code.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long to wait for the browser's tab to receive its last page.
const PAGE_GRACE: Duration = Duration::from_secs(5);

/// What `/_gateway/login/token` answers. No `Debug`: it holds the token.
#[derive(Deserialize)]
pub struct Issued {
    pub token: String,
    pub email: String,
    pub expires_at: i64,
}

/// Only these characters survive RACK_URL's userinfo unescaped (the convox
/// CLI forwards the escaped form), and the gateway only issues them.
pub(crate) fn token_is_url_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Runs the whole login and returns the issued token.
pub async fn login(rack: &str, url: &GatewayUrl, no_browser: bool) -> Result<Issued, ClientError> {
    let gateway = Gateway::new(url.clone())?;
    // A wrong address or an untrusted certificate shows here, not as a
    // browser error followed by a five-minute wait.
    match gateway
        .call::<serde_json::Value>(Method::GET, "/_gateway/healthz", None, None)
        .await
    {
        Err(GatewayError::Refused { status, message }) => {
            return Err(ClientError::Login(format!(
                "{} does not answer like a rack-gateway (HTTP {status}: {message})",
                url.base()
            )))
        }
        other => other?,
    };
    check_login_configured(&gateway, url).await?;
    let verifier = crate::identity::seal::random_token(32);
    let start = format!(
        "{}/_gateway/login/start?cli={}",
        url.base(),
        crate::identity::seal::verifier_hash(&verifier)
    );
    let again = format!("run `rack-gateway login {rack} {}` again", url.base());
    if no_browser {
        eprintln!(
            "To log in to rack `{rack}`, open this link in a browser (on any machine):\n\n  {start}\n\n\
             then paste the one-time code the gateway shows."
        );
        let code = read_code(&again).await?;
        return redeem(&gateway, &code, &verifier).await;
    }

    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| ClientError::Login(format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| ClientError::Login(format!("cannot listen on 127.0.0.1: {e}")))?
        .port();
    // A path nobody else knows: any process or web page can reach a
    // loopback port, and the first callback ends the login, so a guessed
    // `/callback` must not be able to end it with a bogus code.
    let path = format!("/callback/{}", crate::identity::seal::random_token(16));
    let redirect = format!("http://127.0.0.1:{port}{path}");
    let link = format!(
        "{start}&redirect={}",
        percent_encoding::utf8_percent_encode(&redirect, percent_encoding::NON_ALPHANUMERIC)
    );
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(serve_callback(listener, path, tx));
    eprintln!(
        "Log in to rack `{rack}` at {} in your browser. If it doesn't open, visit this link \
         in a browser on this machine:\n\n  {link}\n\n\
         (Browser on another machine? Use `rack-gateway login {rack} {} --no-browser`.)\n\
         Waiting up to 5 minutes for the login to finish...",
        url.base(),
        url.base()
    );
    if !open_browser(&link) {
        eprintln!("(No browser could be started: open the link yourself.)");
    }
    let callback = tokio::time::timeout(LOGIN_TIMEOUT, rx).await;
    let Ok(Ok(callback)) = callback else {
        server.abort();
        return Err(ClientError::Login(format!(
            "no login within 5 minutes: {again}"
        )));
    };
    let issued = redeem(&gateway, &callback.code, &verifier).await;
    let outcome = match &issued {
        Ok(i) => Ok(i.email.clone()),
        Err(e) => Err(e.to_string()),
    };
    if callback.outcome.send(outcome).is_ok() {
        let _ = tokio::time::timeout(PAGE_GRACE, callback.written).await;
    }
    server.abort();
    issued
}

/// What `/_gateway/login/config` answers.
#[derive(Deserialize)]
struct LoginConfig {
    configured: bool,
    #[serde(default)]
    reason: String,
}

/// Asks the gateway whether login is configured, so a gateway without an
/// identity provider says so now rather than after the link is opened.
/// A gateway from before this endpoint (404) is given the benefit of the
/// doubt: the link then shows the same message.
async fn check_login_configured(gateway: &Gateway, url: &GatewayUrl) -> Result<(), ClientError> {
    let answer = gateway
        .call::<LoginConfig>(Method::GET, "/_gateway/login/config", None, None)
        .await;
    match answer {
        Ok(c) if c.configured => Ok(()),
        Ok(c) => Err(ClientError::Login(format!(
            "{} does not offer login: {}; ask its operator to configure identity.oidc, \
             or use a CI token in RACK_URL (`rack-gateway demo` shows a gateway with a test login)",
            url.base(),
            if c.reason.is_empty() {
                "login is not configured"
            } else {
                &c.reason
            }
        ))),
        Err(GatewayError::Refused { status: 404, .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Exchanges the one-time code and the verifier for the gateway token.
async fn redeem(gateway: &Gateway, code: &str, verifier: &str) -> Result<Issued, ClientError> {
    let issued: Issued = gateway
        .call(
            Method::POST,
            "/_gateway/login/token",
            None,
            Some(&serde_json::json!({"code": code, "verifier": verifier})),
        )
        .await?;
    if !token_is_url_safe(&issued.token) {
        return Err(ClientError::Login(
            "the gateway issued a token with characters RACK_URL can't carry".into(),
        ));
    }
    Ok(issued)
}

/// Reads the pasted code from stdin. The read happens on a plain thread
/// that is never joined: a blocked read must not keep the process alive
/// after the timeout.
async fn read_code(again: &str) -> Result<String, ClientError> {
    eprint!("One-time code: ");
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = tx.send(std::io::stdin().read_line(&mut line).map(|_| line));
    });
    match tokio::time::timeout(LOGIN_TIMEOUT, rx).await {
        Ok(Ok(Ok(line))) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        Ok(Ok(Ok(_))) | Ok(Err(_)) => Err(ClientError::Login(format!("no code entered: {again}"))),
        Ok(Ok(Err(e))) => Err(ClientError::Login(format!(
            "cannot read the code from stdin: {e}"
        ))),
        Err(_) => Err(ClientError::Login(format!(
            "no code entered within 5 minutes: {again}"
        ))),
    }
}

/// The browser's visit to the loopback listener: the code, a way to tell
/// the tab how the login ended, and word that the tab got its page.
struct Callback {
    code: String,
    outcome: oneshot::Sender<Result<String, String>>,
    written: oneshot::Receiver<()>,
}

type First = Arc<Mutex<Option<oneshot::Sender<Callback>>>>;

/// Serves `GET <path>?code=...` on the loopback listener until aborted.
/// Only the first callback counts; later ones (a reload) get a page saying
/// the login is over.
async fn serve_callback(listener: TcpListener, path: String, first: oneshot::Sender<Callback>) {
    let first: First = Arc::new(Mutex::new(Some(first)));
    let path: Arc<str> = path.into();
    while let Ok((stream, _)) = listener.accept().await {
        let first = first.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let written: Arc<Mutex<Option<oneshot::Sender<()>>>> = Arc::default();
            let slot = written.clone();
            let service = service_fn(move |req| {
                let first = first.clone();
                let slot = slot.clone();
                let path = path.clone();
                async move { Ok::<_, Infallible>(answer(req, &path, &first, &slot).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Some(w) = written.lock().ok().and_then(|mut w| w.take()) {
                let _ = w.send(());
            }
        });
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn answer(
    req: Request<Incoming>,
    path: &str,
    first: &First,
    written: &Mutex<Option<oneshot::Sender<()>>>,
) -> Response<Body> {
    use crate::identity::login::page;
    if req.method() != Method::GET || req.uri().path() != path {
        return page(StatusCode::NOT_FOUND, "Not found", "<p>Nothing here.</p>");
    }
    let pairs = crate::identity::login::query_pairs(req.uri().query().unwrap_or(""));
    let Some(code) = pairs.into_iter().find(|(k, _)| k == "code").map(|(_, v)| v) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "<p>The gateway sent no login code. Return to the terminal and try again.</p>",
        );
    };
    let Some(sender) = first.lock().ok().and_then(|mut f| f.take()) else {
        return page(
            StatusCode::OK,
            "Login finished",
            "<p>This login is already finished. You can close this tab.</p>",
        );
    };
    let (outcome_tx, outcome_rx) = oneshot::channel();
    let (written_tx, written_rx) = oneshot::channel();
    if let Ok(mut w) = written.lock() {
        *w = Some(written_tx);
    }
    let _ = sender.send(Callback {
        code,
        outcome: outcome_tx,
        written: written_rx,
    });
    match outcome_rx.await {
        Ok(Ok(email)) => page(
            StatusCode::OK,
            "Logged in",
            &format!(
                "<p>Logged in as <b>{}</b>. You can close this tab and return to the terminal.</p>",
                escape(&email)
            ),
        ),
        Ok(Err(message)) => page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            &format!("<p>{}</p><p>Return to the terminal.</p>", escape(&message)),
        ),
        Err(_) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "<p>The CLI stopped waiting. Return to the terminal.</p>",
        ),
    }
}

/// Opens `url` with `$BROWSER` (a `:`-separated list of commands; `%s`
/// stands for the URL, else it is appended), then `xdg-open` or `open`.
/// Returns whether something started; the link is printed either way.
fn open_browser(url: &str) -> bool {
    let mut candidates: Vec<Vec<String>> = Vec::new();
    if let Ok(browser) = std::env::var("BROWSER") {
        for entry in browser.split(':').filter(|e| !e.trim().is_empty()) {
            let mut words: Vec<String> = entry.split_whitespace().map(str::to_string).collect();
            if words.iter().any(|w| w.contains("%s")) {
                for w in &mut words {
                    *w = w.replace("%s", url);
                }
            } else {
                words.push(url.to_string());
            }
            candidates.push(words);
        }
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    candidates.push(vec![opener.to_string(), url.to_string()]);
    for words in candidates {
        let Some((program, args)) = words.split_first() else {
            continue;
        };
        let started = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Ok(mut child) = started {
            // Reaped in the background; the login doesn't wait for it.
            std::thread::spawn(move || child.wait());
            return true;
        }
    }
    false
}
