//! Which `/proxy/{host}/{port}` targets a caller may open, decided over
//! facts fetched beforehand (the rack's app list and the resources of the
//! apps the caller may see).
//!
//! The rack tunnels to anything it can reach (other apps' databases, the
//! cluster's internals), so a `proxy` the policy allows must still name
//! the host and port of a resource `url` of an app the identity may
//! `resources info` — which is what `convox resources proxy` opens.

use super::{Facts, Policy, Subject, Verdict};

/// Most apps whose resources are listed to vet one target: the look-up
/// runs on every tunnelled connection, so it must stay bounded; a target
/// past the cap is refused rather than searched for.
pub(crate) const MAX_TUNNEL_APPS: usize = 50;

/// The tunnel's target from the route's `{host}` and `{port}`.
pub fn target<'a>(host: Option<&'a str>, port: Option<&str>) -> Result<(&'a str, u16), String> {
    let (Some(host), Some(port)) = (host, port) else {
        return Err("the proxy target is unknown".into());
    };
    let port = port
        .parse()
        .map_err(|_| format!("invalid proxy port `{port}`"))?;
    Ok((host, port))
}

/// The apps (in the rack's order) whose resources may reveal a target:
/// those the caller may `resources info`.
pub(crate) fn searchable_apps<'a>(
    policy: &Policy,
    subject: &Subject,
    base: &Facts<'_>,
    apps: &'a [String],
) -> Vec<&'a str> {
    apps.iter()
        .map(String::as_str)
        .filter(|app| {
            let facts = Facts {
                rack: base.rack,
                operation: "resources info",
                app: Some(app),
                now: base.now,
                auth: base.auth,
                ..Default::default()
            };
            matches!(policy.decide(subject, &facts), Verdict::Allow(_))
        })
        .collect()
}

/// Allows the target when one of `resource_urls` (of the first
/// [`MAX_TUNNEL_APPS`] searchable apps) points at it; `searchable` is how
/// many apps could have been searched.
pub fn check(
    host: &str,
    port: u16,
    resource_urls: &[String],
    searchable: usize,
) -> Result<(), String> {
    let found = resource_urls.iter().any(|url| {
        resource_endpoint(url).is_some_and(|(h, p)| p == port && h.eq_ignore_ascii_case(host))
    });
    if found {
        return Ok(());
    }
    let searched = if searchable > MAX_TUNNEL_APPS {
        format!(" (searched the first {MAX_TUNNEL_APPS} apps only)")
    } else {
        String::new()
    };
    Err(format!(
        "{host}:{port} is not a resource of an app you may `resources info`{searched}"
    ))
}

/// Host and explicit port of a resource URL such as
/// `postgres://user:pass@db.example:5432/app`; `None` without a port, since
/// the proxy target always names one.
pub(crate) fn resource_endpoint(url: &str) -> Option<(&str, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => host_port.rsplit_once(':')?,
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_endpoint_takes_host_and_port_past_the_credentials() {
        assert_eq!(
            resource_endpoint("postgres://app:p@ss@db.myapp.mock:5432/app"),
            Some(("db.myapp.mock", 5432))
        );
        assert_eq!(
            resource_endpoint("redis://cache.internal:6379"),
            Some(("cache.internal", 6379))
        );
        assert_eq!(
            resource_endpoint("mysql://u:p@[fd00::1]:3306/db?tls=true"),
            Some(("fd00::1", 3306))
        );
        assert_eq!(resource_endpoint("postgres://db.example/app"), None);
        assert_eq!(resource_endpoint("db.example:5432"), None);
        assert_eq!(resource_endpoint("postgres://u:p@:5432/app"), None);
        assert_eq!(resource_endpoint(""), None);
    }

    #[test]
    fn a_target_is_allowed_only_when_a_resource_points_at_it() {
        let urls = vec!["postgres://u:p@DB.app.mock:5432/x".to_string()];
        assert_eq!(check("db.app.mock", 5432, &urls, 1), Ok(()));
        assert!(check("db.app.mock", 5433, &urls, 1).is_err());
        assert!(check("other.mock", 5432, &urls, 1).is_err());
        let capped = check("x", 1, &[], MAX_TUNNEL_APPS + 1).unwrap_err();
        assert!(capped.contains("first 50 apps"), "{capped}");
        assert_eq!(target(Some("h"), Some("80")), Ok(("h", 80)));
        assert!(target(Some("h"), Some("http")).is_err());
        assert!(target(None, Some("80")).is_err());
    }
}
