//! Routes whose effect reaches beyond what their operation name says
//! (rack-semantics.md §6 rules 12–13), decided over the request's facts:
//!
//! - `builds update` and `builds import-image` select the code a release
//!   runs (manifest, entrypoint, image), so they need `build` as well, like
//!   a deploy;
//! - `certs renew` takes an **app name** in its `{certificate}` segment, so
//!   it is decided on that app;
//! - `certs delete` deletes any rack Secret named by its id, so the id must
//!   look like a certificate's (`cert-…`; the proxy also checks that the
//!   rack lists it).

use super::{Facts, Policy, Subject, Verdict};

/// The operation a route also needs, when it selects code.
pub(crate) fn also_needs(operation: &str) -> Option<&'static str> {
    match operation {
        "builds update" | "builds import-image" => Some("build"),
        _ => None,
    }
}

/// The app a rack-level route acts on, from its path parameters.
pub(crate) fn app_of<'a>(operation: &str, certificate: Option<&'a str>) -> Option<&'a str> {
    match operation {
        "certs renew" => certificate,
        _ => None,
    }
}

/// Checks the extra rules above for an operation the policy allowed.
pub fn check(
    policy: &Policy,
    subject: &Subject,
    f: &Facts<'_>,
    certificate: Option<&str>,
) -> Result<(), String> {
    if let Some(op) = also_needs(f.operation) {
        let facts = Facts {
            operation: op,
            command: None,
            command_shown: None,
            process: None,
            run_headers: &[],
            ..*f
        };
        if let Verdict::Deny(why) = policy.decide(subject, &facts) {
            return Err(format!(
                "`{}` selects the code a release runs, so it also needs `{op}` ({why})",
                f.operation
            ));
        }
    }
    if f.operation == "certs delete" && !certificate.is_some_and(|c| c.starts_with("cert-")) {
        return Err(format!(
            "`certs delete` deletes any rack secret by name: only certificate ids (cert-…) may be deleted, not `{}`",
            certificate.unwrap_or_default()
        ));
    }
    Ok(())
}
