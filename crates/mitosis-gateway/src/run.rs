//! Running a gateway in the foreground (`mitosis gateway`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{EtcdOptions, EtcdSync};
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
    #[error("cannot use the cluster state in etcd")]
    Etcd(#[source] mitosis_cluster::ClusterError),
    #[error("cannot store function {name} of the functions file in etcd")]
    Register {
        name: String,
        #[source]
        source: crate::cluster::SyncError,
    },
    #[error("the gateway's runtime failed")]
    Runtime(#[source] std::io::Error),
}

/// Binds `listen`, registers the functions of `functions_file`, and serves
/// until SIGTERM or SIGINT; then every instance is ended. With `etcd`, the
/// workers and registrations are the cluster's (the file's functions are
/// stored there at start).
pub fn run(config: GatewayConfig, listen: SocketAddr, functions_file: Option<PathBuf>, etcd: Option<EtcdOptions>) -> Result<(), RunError> {
    let functions = match &functions_file {
        Some(path) => FunctionsFile::load(path)?,
        None => FunctionsFile::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(RunError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| RunError::Listen { addr: listen, source })?;
        let gateway = Gateway::new(config);
        let sync = match &etcd {
            Some(options) => Some(EtcdSync::start(&gateway, options).await.map_err(RunError::Etcd)?),
            None => None,
        };
        for (name, f) in functions.functions {
            match &sync {
                Some(s) => {
                    crate::gateway::ClusterSync::put_function(&**s, &name, &f).await.map_err(|source| RunError::Register { name: name.clone(), source })?;
                }
                None => {
                    gateway.register(&name, f);
                }
            }
        }
        gateway.start_background();
        tracing::info!(%listen, workers = ?gateway.worker_addrs(), etcd = etcd.is_some(), "gateway serving");
        crate::http::serve(gateway.clone(), listener, shutdown_signal()).await.map_err(RunError::Runtime)?;
        if let Some(s) = &sync {
            s.stop(Duration::ZERO).await;
        }
        for f in gateway.functions() {
            gateway.unregister(&f.name);
        }
        if let Some(s) = &sync {
            // The seeds just dropped leave etcd too.
            s.stop(Duration::from_secs(3)).await;
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
