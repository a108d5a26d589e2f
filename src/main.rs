//! `chat-kafka-bridge`: parse the configuration, set up logging, run until
//! SIGTERM or SIGINT. Everything else lives in the library.

use std::process::ExitCode;

use chat_kafka_bridge::{app, config, telemetry};

/// mimalloc instead of glibc's malloc: a callback costs dozens of small
/// allocations (JSON values, the record, its headers) made on one thread and
/// often freed on another (librdkafka's); see docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match config::Config::from_args(std::env::args_os(), std::env::vars()) {
        Ok(c) => c,
        Err(config::CliError::Config(e)) => {
            eprintln!("chat-kafka-bridge: {e}");
            return ExitCode::from(2);
        }
        Err(config::CliError::Clap(e)) => e.exit(),
    };
    telemetry::init(config.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-kafka-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listeners = app::Listeners::bind(&config).await?;
        app::run(config, listeners, shutdown_signal()).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "chat-kafka-bridge failed.");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received."),
        _ = int.recv() => tracing::info!("SIGINT received."),
    }
}
