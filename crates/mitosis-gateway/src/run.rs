//! Running a gateway in the foreground (`mitosis gateway`).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::function::FunctionsFile;
use crate::gateway::{Gateway, GatewayConfig};

/// Why a gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::function::ConfigFileError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gateway's runtime failed")]
    Runtime(#[source] std::io::Error),
}

/// Binds `listen`, registers the functions of `functions_file`, and serves
/// until SIGTERM or SIGINT; then every instance is ended.
pub fn run(config: GatewayConfig, listen: SocketAddr, functions_file: Option<PathBuf>) -> Result<(), RunError> {
    let functions = match &functions_file {
        Some(path) => FunctionsFile::load(path)?,
        None => FunctionsFile::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(RunError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| RunError::Listen { addr: listen, source })?;
        let gateway = Gateway::new(config);
        for (name, f) in functions.functions {
            gateway.register(&name, f);
        }
        gateway.start_background();
        tracing::info!(%listen, workers = ?gateway.worker_addrs(), "gateway serving");
        crate::http::serve(gateway.clone(), listener, shutdown_signal()).await.map_err(RunError::Runtime)?;
        for f in gateway.functions() {
            gateway.unregister(&f.name);
        }
        tracing::info!("gateway stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

