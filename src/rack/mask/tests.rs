use super::*;
use crate::rack::routes::{Stream, ROUTES};

const PW: &str = "rack-pw-1";

/// Masks `body` as `kind` for an identity without `secrets read`, and with.
fn both(kind: Masking, body: &str) -> (Value, Value) {
    let parse = |reveal| {
        let out = mask_body(kind, body.as_bytes(), reveal, PW).unwrap();
        serde_json::from_slice::<Value>(&out).unwrap()
    };
    (parse(false), parse(true))
}

fn assert_hidden(v: &Value, secrets: &[&str]) {
    let text = v.to_string();
    for s in secrets {
        assert!(!text.contains(s), "{s:?} leaks: {text}");
    }
}

fn assert_shown(v: &Value, secrets: &[&str]) {
    let text = v.to_string();
    for s in secrets {
        assert!(text.contains(s), "{s:?} missing: {text}");
    }
}

#[test]
fn every_named_operation_exists_in_the_route_table() {
    let known = |op: &str| ROUTES.iter().any(|r| r.operation == op);
    for (op, _) in MASKED {
        assert!(known(op), "MASKED names unknown operation {op:?}");
    }
    for op in STREAMS {
        assert!(known(op), "STREAMS names unknown operation {op:?}");
        assert!(
            Masking::for_operation(op).is_none(),
            "{op} is both masked and a stream"
        );
    }
}

#[test]
fn every_response_stream_needs_the_stream_permission() {
    for r in ROUTES {
        if matches!(r.stream, Stream::WsOut | Stream::RespBody) {
            assert_eq!(
                stream_needs(r.operation),
                Some("secrets stream"),
                "{} {}",
                r.pattern,
                r.operation
            );
        }
    }
    assert!(crate::policy::PERMISSIONS.contains(&STREAM_PERMISSION));
    assert_eq!(stream_needs("releases info"), None);
}

#[test]
fn stream_refusal_names_the_missing_permission() {
    let mut access = SecretAccess::default();
    let why = stream_refusal("logs", &access).unwrap();
    assert!(why.contains("`secrets stream`"), "{why}");
    assert_eq!(stream_refusal("releases", &access), None);
    access.stream = true;
    assert_eq!(stream_refusal("logs", &access), None);
    assert_eq!(stream_refusal("files download", &access), None);
}

#[test]
fn env_values_are_masked_keys_kept() {
    assert_eq!(
        mask_env("A=1\nSECRET_KEY=s3cr3t\nURL=x=y"),
        "A=******\nSECRET_KEY=******\nURL=******"
    );
}

#[test]
fn env_lines_are_masked_by_the_parsed_key() {
    // ` KEY =` keeps its spelling, duplicates are all masked, CRLF is kept,
    // a lone `\r` is part of the value (so `B=2` is A's value, masked).
    assert_eq!(
        mask_env(" B =2\nB=3\r\nB=4\r\nA=1\rB=2\n\n=x\n#C=3"),
        " B =******\nB=******\r\nB=******\r\nA=******\n\n=******\n#C=******"
    );
    // A line without `=` is ignored by the rack but stored: hidden whole.
    assert_eq!(
        mask_env("K=v\nMIIEpasted-key-body\r\n"),
        "K=******\n******\r\n"
    );
    assert_eq!(mask_env(""), "");
}

#[test]
fn url_passwords_are_masked() {
    assert_eq!(
        mask_url("postgres://u:dbsecret@db:5432/x"),
        "postgres://u:******@db:5432/x"
    );
    assert_eq!(mask_url("redis://:pw@h:6379"), "redis://:******@h:6379");
    assert_eq!(mask_url("https://tok@h/p"), "https://******@h/p");
    assert_eq!(mask_url("https://h/p@x"), "https://h/p@x");
    assert_eq!(mask_url("not a url"), "not a url");
}

#[test]
fn release_lists_and_the_rack_password_are_masked() {
    let body = br#"[{"id":"R1","env":"K=v\nS=s3cr3t"},{"id":"R2","env":"","description":"pw rack-pw-1 and rack%2Dpw%2D1"}]"#;
    let out = mask_body(Masking::Releases, body, false, PW).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""env":"K=******\nS=******""#), "{text}");
    assert!(
        !text.contains("s3cr3t") && !text.contains("rack-pw-1"),
        "{text}"
    );
    assert!(!text.contains("rack%2Dpw%2D1"), "{text}");
    let revealed = mask_body(Masking::Releases, body, true, PW).unwrap();
    let text = String::from_utf8(revealed).unwrap();
    assert!(
        text.contains("s3cr3t") && !text.contains("rack-pw-1"),
        "{text}"
    );
}

#[test]
fn release_create_echo_masks_env_and_manifest() {
    let body = r#"{"id":"RABC","app":"myapp","build":"BXYZ","env":"DATABASE_URL=postgres://u:dbsecret@db/x\r\nSTRIPE_KEY=sk_live_1","manifest":"services:\n  web:\n    environment:\n      - TOKEN=mtok9\n","description":"env add:STRIPE_KEY","created":"2026-01-02T00:00:00Z"}"#;
    let (masked, shown) = both(Masking::Releases, body);
    assert_eq!(masked["env"], "DATABASE_URL=******\r\nSTRIPE_KEY=******");
    assert_eq!(masked["manifest"], PLACEHOLDER);
    assert_eq!(masked["description"], "env add:STRIPE_KEY");
    assert_eq!(masked["build"], "BXYZ");
    assert_hidden(&masked, &["dbsecret", "sk_live_1", "mtok9"]);
    assert_shown(&shown, &["dbsecret", "sk_live_1", "mtok9"]);
}

#[test]
fn resource_lists_mask_the_url_password() {
    let body = r#"[{"name":"db","type":"postgres","status":"running","url":"postgres://app:dbpass@db.mock:5432/app","apps":[{"name":"myapp"}]}]"#;
    let (masked, shown) = both(Masking::Resources, body);
    assert_eq!(masked[0]["url"], "postgres://app:******@db.mock:5432/app");
    assert_eq!(masked[0]["type"], "postgres");
    assert_shown(&shown, &["dbpass"]);
}

#[test]
fn rack_resources_mask_the_webhook_url_in_get_list_and_create() {
    let one = r#"{"name":"hooks","type":"webhook","status":"running","parameters":{"Url":"https://hooks.slack.com/services/T0/B0/xoxwebhooktok"}}"#;
    let list = format!("[{one}]");
    for body in [one.to_string(), list] {
        let (masked, shown) = both(Masking::RackResources, &body);
        let item = if masked.is_array() {
            &masked[0]
        } else {
            &masked
        };
        assert_eq!(item["parameters"]["Url"], PLACEHOLDER);
        assert_eq!(item["name"], "hooks");
        assert_hidden(&masked, &["xoxwebhooktok"]);
        assert_shown(&shown, &["xoxwebhooktok"]);
    }
    assert_eq!(
        Masking::for_operation("rack resources create"),
        Some(Masking::RackResources)
    );
}

#[test]
fn builds_mask_the_repository_for_everyone() {
    let body = br#"{"id":"B1","repository":"https://convox:rack-pw-1@api.x/app"}"#;
    let out = mask_body(Masking::Builds, body, true, "other").unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("https://convox:******@api.x/app"), "{text}");
}

#[test]
fn builds_mask_manifest_and_reason() {
    let body = r#"[{"id":"BABC","app":"myapp","status":"failed","manifest":"environment:\n  - API_KEY=mkey42\nbudget:\n  atCapWebhookUrl: https://hooks.example/capsecret\n","reason":"pull access denied: Authorization: Basic cmVnc2VjcmV0","release":"","logs":"object:///myapp/build/BABC/logs"},{"id":"BDEF","status":"complete","manifest":"","reason":""}]"#;
    let (masked, shown) = both(Masking::Builds, body);
    assert_eq!(masked[0]["manifest"], PLACEHOLDER);
    assert_eq!(masked[0]["reason"], PLACEHOLDER);
    assert_eq!(masked[0]["status"], "failed");
    assert_eq!(masked[0]["logs"], "object:///myapp/build/BABC/logs");
    assert_eq!(masked[1]["reason"], "", "an empty reason stays empty");
    assert_hidden(&masked, &["mkey42", "capsecret", "cmVnc2VjcmV0"]);
    assert_shown(&shown, &["mkey42", "capsecret", "cmVnc2VjcmV0"]);
}

#[test]
fn external_build_create_masks_repository_and_manifest() {
    let body = r#"{"id":"BEXT","status":"created","repository":"https://convox:rack-pw-1@api.rack.example/myapp","manifest":"x: y"}"#;
    let (masked, shown) = both(Masking::Builds, body);
    assert_eq!(
        masked["repository"],
        "https://convox:******@api.rack.example/myapp"
    );
    assert_eq!(shown["repository"], masked["repository"]);
    assert_eq!(masked["manifest"], PLACEHOLDER);
    assert_eq!(shown["manifest"], "x: y");
}

#[test]
fn keyroll_private_keys_are_masked() {
    let body = br#"{"name":"k","private-key":"-----BEGIN"}"#;
    let text = String::from_utf8(mask_body(Masking::Keyroll, body, false, PW).unwrap()).unwrap();
    assert!(
        !text.contains("BEGIN") && text.contains("\"name\":\"k\""),
        "{text}"
    );
    let (_, shown) = both(
        Masking::Keyroll,
        r#"{"name":"k","private-key":"-----BEGIN"}"#,
    );
    assert_eq!(shown["private-key"], "-----BEGIN");
}

#[test]
fn config_values_are_masked_except_the_cli_env_mask() {
    let list = r#"[{"name":"newrelic","value":"license_key: nrsecret77"},{"name":"cli-env-mask","value":"SECRET_KEY,STRIPE_KEY"}]"#;
    let (masked, shown) = both(Masking::Configs, list);
    assert_eq!(masked[0]["value"], PLACEHOLDER);
    assert_eq!(masked[0]["name"], "newrelic");
    assert_eq!(masked[1]["value"], "SECRET_KEY,STRIPE_KEY");
    assert_shown(&shown, &["nrsecret77"]);
    let (one, _) = both(
        Masking::Configs,
        r#"{"name":"newrelic","value":"nrsecret77"}"#,
    );
    assert_eq!(one["value"], PLACEHOLDER);
    assert_eq!(
        Masking::for_operation("configs get"),
        Some(Masking::Configs)
    );
}

#[test]
fn registry_passwords_are_masked_in_list_and_add_echo() {
    let list = r#"[{"server":"ghcr.io","username":"bot","password":"ghp_regsecret"}]"#;
    let (masked, shown) = both(Masking::Registries, list);
    assert_eq!(masked[0]["password"], PLACEHOLDER);
    assert_eq!(masked[0]["username"], "bot");
    assert_shown(&shown, &["ghp_regsecret"]);
    let (echo, _) = both(
        Masking::Registries,
        r#"{"server":"ghcr.io","username":"bot","password":"ghp_regsecret"}"#,
    );
    assert_eq!(echo["password"], PLACEHOLDER);
    assert_eq!(
        Masking::for_operation("registries add"),
        Some(Masking::Registries)
    );
}

#[test]
fn jwt_tokens_are_masked() {
    let (masked, shown) = both(Masking::Jwt, r#"{"token":"eyJhbGciOi.jwtsecret"}"#);
    assert_eq!(masked["token"], PLACEHOLDER);
    assert_eq!(shown["token"], "eyJhbGciOi.jwtsecret");
}

#[test]
fn process_commands_are_masked() {
    let body = r#"[{"id":"build-abc12","app":"myapp","command":"build -method tgz -build-args NPM_TOKEN=npmsecret","name":"build","status":"running","release":"R1","host":"10.0.0.7"},{"id":"web-1","command":"","name":"web","status":"running"}]"#;
    let (masked, shown) = both(Masking::Processes, body);
    assert_eq!(masked[0]["command"], PLACEHOLDER);
    assert_eq!(masked[0]["id"], "build-abc12");
    assert_eq!(masked[0]["host"], "10.0.0.7");
    assert_eq!(masked[1]["command"], "");
    assert_shown(&shown, &["npmsecret"]);
    for op in ["run", "ps", "ps info", "rack ps"] {
        assert_eq!(Masking::for_operation(op), Some(Masking::Processes), "{op}");
    }
}

#[test]
fn diagnose_logs_and_event_messages_are_masked() {
    let body = r#"{"app":"myapp","namespace":"rack-myapp","pods":[{"name":"web-1","phase":"Running","logs":["DATABASE_URL=postgres://u:diagpw@db/x"],"previousLogs":["panic: token tok-diag-1"]}],"initPods":[{"name":"init-1","initContainers":[{"name":"migrate","logs":"migrating with key initsecret"}]}],"events":[{"reason":"Failed","message":"pull secret regpw-event","count":3}],"checks":[{"name":"image","message":"ok"}]}"#;
    let (masked, shown) = both(Masking::Diagnose, body);
    assert_hidden(
        &masked,
        &["diagpw", "tok-diag-1", "initsecret", "regpw-event"],
    );
    assert_eq!(masked["pods"][0]["phase"], "Running");
    assert_eq!(masked["events"][0]["reason"], "Failed");
    assert_eq!(masked["events"][0]["count"], 3);
    assert_eq!(masked["checks"][0]["message"], "ok");
    assert_eq!(
        masked["initPods"][0]["initContainers"][0]["name"],
        "migrate"
    );
    assert_shown(
        &shown,
        &["diagpw", "tok-diag-1", "initsecret", "regpw-event"],
    );
}

#[test]
fn manifest_service_environment_defaults_are_masked() {
    let body = r#"{"name":"web","environment":["PORT=3000","API_KEY=defaultsecret","REQUIRED_VAR"],"scale":{"count":2}}"#;
    let (masked, shown) = both(Masking::ManifestService, body);
    assert_eq!(
        masked["environment"],
        serde_json::json!(["PORT=******", "API_KEY=******", "REQUIRED_VAR"])
    );
    assert_eq!(masked["scale"]["count"], 2);
    assert_shown(&shown, &["defaultsecret"]);
}

#[test]
fn budget_simulation_webhook_url_is_masked() {
    let body = r#"{"app":"myapp","at-cap-action":"shutdown","webhook-url":"https://hooks.slack.com/services/T/B/simsecret","services":[{"name":"web"}]}"#;
    let (masked, shown) = both(Masking::BudgetSimulate, body);
    assert_eq!(masked["webhook-url"], PLACEHOLDER);
    assert_eq!(masked["at-cap-action"], "shutdown");
    assert_shown(&shown, &["simsecret"]);
}

#[test]
fn unexpected_types_of_secret_fields_are_blanked_not_passed() {
    let (masked, _) = both(
        Masking::Releases,
        r#"{"id":"R","env":{"K":"objsecret"},"manifest":["m1secret"]}"#,
    );
    assert_hidden(&masked, &["objsecret", "m1secret"]);
    let (masked, _) = both(Masking::RackResources, r#"{"parameters":"Url=psecret"}"#);
    assert_hidden(&masked, &["psecret"]);
}

#[test]
fn non_json_and_unexpected_shapes_are_errors() {
    assert_eq!(
        mask_body(Masking::Releases, b"<html>", false, PW),
        Err(MaskError::NotJson)
    );
    assert_eq!(
        mask_body(Masking::Configs, b"ok then", false, PW),
        Err(MaskError::NotJson)
    );
    assert_eq!(
        mask_body(Masking::Registries, b"ok\n", false, PW).unwrap(),
        b"ok\n"
    );
    for body in [&b"\"K=v\""[..], b"[\"K=v\"]", b"null", b"42"] {
        assert_eq!(
            mask_body(Masking::Releases, body, false, PW),
            Err(MaskError::Shape),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        mask_body(Masking::Registries, b"[]", false, PW).unwrap(),
        b"[]\n"
    );
}
