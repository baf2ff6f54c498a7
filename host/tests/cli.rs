//! The `chorus` binary itself: `token`, `plugin check`, and `serve`
//! stopping on SIGTERM. (The server's behaviour is tested through the
//! library in `tests/it`; this binary test covers what only the
//! executable does.)

use std::process::{Command, Stdio};
use std::time::Duration;

const CHORUS: &str = env!("CARGO_BIN_EXE_chorus");

#[test]
fn token_prints_credentials_that_verify() {
    let out = Command::new(CHORUS)
        .args(["token", "--dev", "--user-id", "1233", "--ttl", "600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sid = token["sid"].as_str().unwrap();
    let now = chorus::ids::unix_now();
    let claims = chorus_protocol::verify_sid(
        chorus::config::DEV_APP_SECRET.as_bytes(),
        sid,
        Some(1233),
        now,
    )
    .unwrap();
    assert_eq!(token["user_id"], 1233);
    assert_eq!(token["expires_at"], claims.expires_at);
    assert_eq!(
        token["sign_key"],
        chorus_protocol::sign_key(chorus::config::DEV_APP_SECRET.as_bytes(), sid)
    );
}

#[test]
fn token_without_a_secret_outside_dev_mode_fails_clearly() {
    let out = Command::new(CHORUS)
        .args(["token", "--user-id", "1"])
        .env_remove("CHORUS_APP_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("app_secret"));
}

#[test]
fn plugin_check_describes_a_good_plugin_and_refuses_a_bad_file() {
    let good = format!("{}/room.wasm", chorus::plugin::ARTIFACTS_DIR);
    let out = Command::new(CHORUS)
        .args(["plugin", "check", &good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let description: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(description["name"], "room");
    // The grants of the `room.toml` shipped beside it.
    assert_eq!(
        description["grants"],
        serde_json::json!({
            "effects": ["seats"],
            "imports": ["room-state", "profiles", "config", "clock", "log"],
            "explicit": true,
        })
    );
    // Without a `<name>.toml`: the contract 1.0 set, and 1.2's `events`.
    let fixture = format!("{}/faulty.wasm", chorus::plugin::ARTIFACTS_DIR);
    let out = Command::new(CHORUS)
        .args(["plugin", "check", &fixture])
        .output()
        .unwrap();
    let description: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(description["grants"]["explicit"], false, "{description}");
    assert_eq!(
        description["grants"]["effects"],
        serde_json::json!(["seats", "calls", "notify-everyone", "kv", "events"])
    );
    let dir = std::env::temp_dir().join(format!("chorus-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.wasm");
    std::fs::write(&bad, b"not wasm").unwrap();
    let out = Command::new(CHORUS)
        .args(["plugin", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("would be refused"));
}

/// `chorus serve --dev` with `env` added, on ports it picks; returns the
/// child and its public port once it listens.
fn serve_dev(env: &[(&str, String)]) -> (std::process::Child, u16) {
    let mut command = Command::new(CHORUS);
    command.args(["serve", "--dev"]);
    for (key, value) in env {
        command.env(key, value);
    }
    let (child, port, _) = spawn_listening(command);
    (child, port)
}

/// Starts `command`, a `chorus serve`, listening on `127.0.0.1:0` for both
/// ports, and returns the child with the public and admin ports its
/// `chorus listening` log line names, once it listens. The server binds
/// the ports itself: a port found free by the test and handed over could
/// be taken by a parallel test in between (a fresh-clone CI run lost the
/// webhook receiver's that way). Its log (JSON, stderr) is read to that
/// line and then drained; stdout is dropped.
fn spawn_listening(mut command: Command) -> (std::process::Child, u16, u16) {
    use std::io::BufRead;
    let mut child = command
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .env("CHORUS_SERVER__LISTEN", "127.0.0.1:0")
        .env("CHORUS_ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (found, listening) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            // The JSON log is flattened: the event's fields at the top.
            let fields = &log;
            if fields["message"] == "chorus listening"
                && let Some(found) = found.take()
            {
                let port = |key: &str| {
                    fields[key]
                        .as_str()
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                        .map(|a| a.port())
                };
                let _ = found.send((port("addr"), port("admin_addr")));
            }
        }
    });
    match listening.recv_timeout(Duration::from_secs(20)) {
        Ok((Some(port), Some(admin))) => (child, port, admin),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not say where it listens: {other:?}");
        }
    }
}

/// Sends SIGTERM and asserts the server exits 0 within 10 s.
fn terminate(mut child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        child.try_wait().unwrap()
    });
    let exited = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no exit within 10 s of SIGTERM")
    });
    assert!(exited.success(), "{exited:?}");
}

#[test]
fn serve_exits_zero_on_sigterm() {
    let (child, _) = serve_dev(&[]);
    terminate(child);
}

/// Issue 21, item 1: a plugin cache folder other users can write to
/// refuses to start, with an error that names the folder and the fix.
#[cfg(unix)]
#[test]
fn serve_refuses_a_world_writable_plugin_cache() {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir().join(format!("chorus-cli-cache-{}", std::process::id()));
    let cache = base.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut child = Command::new(CHORUS)
        .args(["serve", "--dev"])
        .env("CHORUS_SERVER__LISTEN", "127.0.0.1:0")
        .env("CHORUS_ADMIN__LISTEN", "127.0.0.1:0")
        .env("CHORUS_SERVER__DATA_DIR", base.join("data"))
        .env("CHORUS_PLUGINS__CACHE_DIR", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = (0..600).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        child.try_wait().unwrap()
    });
    let Some(status) = exited else {
        let _ = child.kill();
        panic!("the server started on a world-writable plugin cache");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("plugin cache"), "{stderr}");
    assert!(stderr.contains("writable by other users"), "{stderr}");
    assert!(stderr.contains(&cache.display().to_string()), "{stderr}");
    std::fs::remove_dir_all(&base).ok();
}

/// A collector stand-in: accepts HTTP requests on a free port and keeps
/// every body it receives.
fn otlp_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok() {
                kept.lock().unwrap().extend_from_slice(&body);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn spans_of_an_action_reach_the_otlp_endpoint() {
    use std::io::{Read, Write};
    let (collector, bodies) = otlp_receiver();
    let endpoint = format!("http://127.0.0.1:{collector}/v1/traces");
    let (child, port) = serve_dev(&[("CHORUS_TELEMETRY__OTLP_ENDPOINT", endpoint)]);
    // One signed server-API action: a notice to everyone online.
    let body = r#"{"action":"room_notice","expire_time":1,"content":"hi","client_url":""}"#;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let headers = chorus_protocol::server_api::signed_headers(
        chorus::config::DEV_APP_SECRET.as_bytes(),
        &ts,
        "otlptest1",
        "POST",
        "/api/v1/actions",
        body.as_bytes(),
    );
    let mut request = format!(
        "POST /api/v1/actions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut api = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    api.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    api.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // SIGTERM flushes the batched spans before the process exits.
    terminate(child);
    let received = bodies.lock().unwrap().clone();
    let has = |name: &str| received.windows(name.len()).any(|w| w == name.as_bytes());
    for span in [
        "chorus.dispatch.action",
        "chorus.plugin.call",
        "chorus.store.apply",
        "chorus.delivery.deliver",
    ] {
        assert!(
            has(span),
            "span {span} exported ({} bytes received)",
            received.len()
        );
    }
}

/// Property (issue 19, item 2): arbitrary `CHORUS_*` environment
/// variables, on real keys and unknown ones, with right, wrong and absurd
/// values, make `chorus token` print credentials or fail with a
/// `configuration:` error, never panic. (In a child process: setting
/// variables in the test process itself is unsafe.)
#[test]
fn any_environment_loads_or_fails_with_a_typed_error() {
    use proptest::prelude::*;

    let keys = prop::sample::select(vec![
        "CHORUS_SERVER__LISTEN",
        "CHORUS_SERVER__APP_SECRET",
        "CHORUS_APP_SECRET",
        "CHORUS_HEARTBEAT__PING_TIMEOUT",
        "CHORUS_HEARTBEAT__GRACE",
        "CHORUS_SIGNING__MAX_SKEW",
        "CHORUS_LIMITS__MAX_FRAME_BYTES",
        "CHORUS_PLUGINS__MAX_MEMORY",
        "CHORUS_PLUGINS__CALL_TIMEOUT",
        "CHORUS_DELIVERY__MODE",
        "CHORUS_DELIVERY__ACTIONS__SEND_GIFT",
        "CHORUS_ROOMS__SEATS",
        "CHORUS_STORE__LEASE_TTL",
        "CHORUS_ADMIN__TOKEN",
        "CHORUS_NO__SUCH__KEY",
        "CHORUS___",
        "CHORUS_ROOMS__",
        "CHORUS___SEATS",
    ]);
    let values = prop_oneof![
        "-?[0-9]{1,22}(ms|s|h|d|MiB|EiB|)",
        "[a-z0-9:./\\[\\]{}=, \"-]{0,24}",
        prop::sample::select(vec![
            "", "0", "0s", "[1,2]", "{a=1}", "true", "1.5", "relay"
        ])
        .prop_map(str::to_owned),
    ];
    let config = ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(
        &(prop::collection::vec((keys, values), 1..5), any::<bool>()),
        |(vars, dev)| {
            let mut command = Command::new(CHORUS);
            command.args(["token", "--user-id", "7"]);
            if dev {
                command.arg("--dev");
            }
            for (key, value) in &vars {
                command.env(key, value);
            }
            let out = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(!stderr.contains("panicked"), "{vars:?}: {stderr}");
            if !out.status.success() {
                prop_assert_eq!(out.status.code(), Some(1), "{:?}: {}", vars, stderr);
                prop_assert!(stderr.contains("configuration"), "{vars:?}: {stderr}");
            }
            Ok(())
        },
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Issue 14 items 1 and 5: `plugin new` writes a standalone crate outside
/// the checkout that builds for wasm32-wasip2 as written, that `plugin
/// check` accepts with its shipped grants, and that `plugin dev --once`
/// puts live in a running `serve --dev`, reporting the version the server
/// serves.
#[test]
fn plugin_new_writes_a_crate_that_builds_checks_and_goes_live() {
    let dir = std::env::temp_dir().join(format!("chorus-cli-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(CHORUS)
        .args(["plugin", "new", "cli_made", "--path"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crate_dir = dir.join("cli_made");
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    assert_eq!(readme.lines().count(), 5, "{readme}");
    // A second crate of the same name, or a bundled plugin's name: refused.
    for name in ["cli_made", "chat"] {
        let again = Command::new(CHORUS)
            .args(["plugin", "new", name, "--path"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!again.status.success(), "{name}");
    }

    // Its unit tests (`cargo test` in the crate) run in scripts/plugin-path,
    // after this binary: a cold host-target build of the SDK's
    // dependencies here would starve the other tests of this binary.

    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let mut command = Command::new(CHORUS);
    command
        .args(["serve", "--dev"])
        .env("CHORUS_PLUGINS__DIR", &plugins);
    let (mut server, _, admin) = spawn_listening(command);
    let dev = Command::new(CHORUS)
        .args(["plugin", "dev"])
        .arg(&crate_dir)
        .arg("--server")
        .arg(&plugins)
        .args(["--admin", &format!("http://127.0.0.1:{admin}"), "--once"])
        .env("CHORUS_ADMIN__TOKEN", chorus::config::DEV_ADMIN_TOKEN)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        dev.status.success(),
        "{}",
        String::from_utf8_lossy(&dev.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&dev.stdout),
        "live: cli_made 0.1.0\n"
    );

    // What went live is what `plugin check` accepts, with its grants.
    let check = Command::new(CHORUS)
        .args(["plugin", "check"])
        .arg(plugins.join("cli_made.wasm"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["name"], "cli_made");
    assert_eq!(report["version"], "0.1.0");
    assert_eq!(
        report["actions"],
        serde_json::json!([{"name": "cli_made", "sources": ["client", "server"]}])
    );
    assert_eq!(report["grants"]["explicit"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 14 item 6: `plugin check --server <admin url>` refuses a plugin
/// claiming an action another plugin of the running server serves (the
/// server would refuse it at load), and accepts a new version of a plugin
/// it serves.
#[test]
fn plugin_check_against_a_running_server_reports_a_clash() {
    let dir = std::env::temp_dir().join(format!("chorus-cli-clash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let artifacts = std::path::Path::new(chorus::plugin::ARTIFACTS_DIR);
    std::fs::copy(artifacts.join("echo_v1.wasm"), dir.join("echo.wasm")).unwrap();
    let mut command = Command::new(CHORUS);
    command
        .args(["serve", "--dev"])
        .env("CHORUS_PLUGINS__DIR", &dir);
    let (mut server, _, admin) = spawn_listening(command);
    let url = format!("http://127.0.0.1:{admin}");
    let check = |file: std::path::PathBuf| {
        Command::new(CHORUS)
            .args(["plugin", "check"])
            .arg(file)
            .args(["--server", &url])
            .env("CHORUS_ADMIN__TOKEN", chorus::config::DEV_ADMIN_TOKEN)
            .output()
            .unwrap()
    };
    // Ready once the admin listener answers with echo loaded.
    let ready = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        check(dir.join("echo.wasm")).status.success()
    });
    let clash = check(artifacts.join("echo_clash.wasm"));
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ready, "the server serves echo");
    assert!(!clash.status.success());
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        stderr.contains(r#"action "echo" is already served by plugin "echo""#),
        "{stderr}"
    );
}

/// Issue 14 item 4: `plugin run` runs one event through the real runtime
/// against a given room state, prints what the server would apply and
/// deliver, and exits non-zero with the error code when the call fails.
#[test]
fn plugin_run_runs_one_event_against_a_given_state() {
    let dir = std::env::temp_dir().join(format!("chorus-cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    std::fs::write(
        &state,
        r#"{"rooms": {"r1": {"room_id": 88, "members": [1, 2], "seated": {"2": 4}}},
            "profiles": {"1": {"nickname": "Ann"}}}"#,
    )
    .unwrap();
    let run = |user: u64| {
        let event = dir.join(format!("event-{user}.json"));
        std::fs::write(
            &event,
            serde_json::json!({"action": "send_topic_msg", "source": "client", "user_id": user,
                "payload": {"channel_name": "r1", "content": "hi"}})
            .to_string(),
        )
        .unwrap();
        Command::new(CHORUS)
            .args(["plugin", "run"])
            .arg(format!("{}/chat.wasm", chorus::plugin::ARTIFACTS_DIR))
            .arg("--event")
            .arg(&event)
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap()
    };
    let member = run(1);
    let outsider = run(3);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&member.stdout).unwrap();
    assert_eq!(report["plugin"], "chat");
    assert_eq!(report["result"], serde_json::json!({"channel_name": "r1"}));
    assert_eq!(
        report["notifications"][0]["target"],
        serde_json::json!({"room": "r1"})
    );
    assert_eq!(report["notifications"][0]["body"]["nickname"], "Ann");
    assert_eq!(report["notifications"][0]["body"]["content"], "hi");
    assert!(report["time_us"].as_u64().is_some(), "{report}");
    assert!(
        report["peak_memory_bytes"].as_u64().is_some_and(|b| b > 0),
        "{report}"
    );
    // `plugins.meter_fuel` is on by default: the call's exact fuel.
    assert!(report["fuel"].as_u64().is_some_and(|f| f > 0), "{report}");
    assert_eq!(report["events"], serde_json::json!([]), "{report}");
    assert!(!outsider.status.success());
    let report: serde_json::Value = serde_json::from_slice(&outsider.stdout).unwrap();
    assert_eq!(report["error_code"], 2004, "{report}");
}

/// Issue 16: a node SIGKILLed with events its endpoint never had (the
/// receiver answering 503) and started again on the same data folder
/// delivers every one of them: recorded on disk before each action was
/// answered. The receiver is the example receiver, which checks every
/// signature.
#[test]
fn a_sigkilled_node_delivers_its_undelivered_events_after_a_restart() {
    use example_webhook_receiver::Receiver;
    const SECRET: &str = "webhook-cli-secret-0123456789";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::new(SECRET, false);
    // Bound here and kept: a port found free and bound again later can be
    // taken in between by another test of this binary (a CI run failed so).
    let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = bound.local_addr().unwrap().port();
    bound.set_nonblocking(true).unwrap();
    let router = receiver.router();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(bound).unwrap();
        axum::serve(listener, router).await.unwrap();
    });
    receiver.set_down(true);
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("chorus.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n\n[[webhooks]]\nname = \"backend\"\nurl = \"http://127.0.0.1:{hook_port}/hooks\"\nsecret = \"{SECRET}\"\nbackoff_max = \"300ms\"\n",
            data.path().join("data")
        ),
    )
    .unwrap();
    let start = || {
        let mut command = Command::new(CHORUS);
        command.args(["serve", "--dev", "--config"]).arg(&config);
        let (child, port, _) = spawn_listening(command);
        (child, port)
    };
    let (mut first, port) = start();
    let http = reqwest::Client::new();
    let action = |body: serde_json::Value| {
        let body = body.to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let headers = chorus_protocol::server_api::signed_headers(
            chorus::config::DEV_APP_SECRET.as_bytes(),
            &ts,
            &nonce,
            "POST",
            "/api/v1/actions",
            body.as_bytes(),
        );
        let mut request = http
            .post(format!("http://127.0.0.1:{port}/api/v1/actions"))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let profile = |user: u64| {
        serde_json::json!({"user_id": user, "channel_name": "cli_kill", "room_id": 9,
            "nickname": "n", "sex": 1, "avatar_url": "https://a.example/a.png",
            "avatar_small_url": "https://a.example/s.png", "i_segment": "newcomer"})
    };
    runtime.block_on(async {
        for user in 1..=5u64 {
            let mut enter = profile(user);
            enter["action"] = "enter_room".into();
            assert_eq!(action(enter).await, 200);
            let mut up = profile(user);
            up["action"] = "up".into();
            assert_eq!(action(up).await, 200);
        }
    });
    // SIGKILL: no shutdown, no flush.
    first.kill().unwrap();
    first.wait().unwrap();
    receiver.set_down(false);
    let (second, _) = start();
    // occupied, then entered and seat.taken for each of 5 users; then,
    // recorded by the second run at its start, what the killed one owed:
    // seat.freed and room.exited for each (its room state died with it).
    let recorded = 1 + 5 * 2;
    let expected = recorded + 5 * 2;
    let arrived = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        receiver.events().len() >= expected
    });
    let events = receiver.events();
    terminate(second);
    assert!(arrived, "{} of {expected} events arrived", events.len());
    assert_eq!(events.len(), expected);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["room_seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert!(
        seqs[..recorded].windows(2).all(|w| w[1] == w[0] + 1),
        "{seqs:?}"
    );
    let owed: Vec<&str> = events[recorded..]
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(owed, ["seat.freed", "room.exited"].repeat(5), "{events:#?}");
}
