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

#[test]
fn serve_exits_zero_on_sigterm() {
    let port = free_port();
    let admin = free_port();
    let mut child = Command::new(CHORUS)
        .args(["serve", "--dev"])
        .env("CHORUS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CHORUS_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    assert!(ready, "the server listens");
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
