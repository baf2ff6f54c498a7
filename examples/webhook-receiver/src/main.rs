//! Receives Chorus webhooks and prints each new event as a JSON line.
//!
//! Run with: `cargo run -p example-webhook-receiver -- 127.0.0.1:9000`
//! with the endpoint's secret in `WEBHOOK_SECRET`, and point a
//! `[[webhooks]]` entry's `url` at `http://127.0.0.1:9000/hooks`.

use example_webhook_receiver::Receiver;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let Ok(secret) = std::env::var("WEBHOOK_SECRET") else {
        eprintln!("set WEBHOOK_SECRET to the endpoint's secret");
        std::process::exit(2);
    };
    let receiver = Receiver::new(&secret, true);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("webhook-receiver listening on {}", listener.local_addr()?);
    axum::serve(listener, receiver.router()).await
}
