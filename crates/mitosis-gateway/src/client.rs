//! A blocking client of the gateway's HTTP API, for `mitosis fn`.

use std::time::Duration;

use crate::function::FunctionConfig;

/// Why a call to the gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The gateway answered with an error status; `message` is its `error`.
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
}

/// An answer from the gateway.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// `x-mitosis-start`, for invocations.
    pub start: Option<String>,
    /// `x-mitosis-instance`, for invocations.
    pub instance: Option<String>,
    /// `x-mitosis-worker`, for invocations.
    pub worker: Option<String>,
}

/// The gateway at `base` (`http://host:port`).
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build();
        Client { base: base.trim_end_matches('/').to_string(), agent: config.into() }
    }

    fn finish(&self, url: &str, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, ClientError> {
        let mut resp = r.map_err(|e| ClientError::Unreachable { url: url.to_string(), message: e.to_string() })?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (start, instance, worker) = (header("x-mitosis-start"), header("x-mitosis-instance"), header("x-mitosis-worker"));
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| ClientError::Unreachable { url: url.to_string(), message: e.to_string() })?;
        if status >= 400 {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(ClientError::Status { status, message });
        }
        Ok(Answer { status, body, start, instance, worker })
    }

    pub fn deploy(&self, name: &str, config: &FunctionConfig) -> Result<Answer, ClientError> {
        let url = format!("{}/functions/{name}", self.base);
        let body = serde_json::to_vec(config).unwrap_or_default();
        let r = self.agent.put(&url).header("content-type", "application/json").send(&body[..]);
        self.finish(&url, r)
    }

    pub fn list(&self) -> Result<Answer, ClientError> {
        let url = format!("{}/functions", self.base);
        let r = self.agent.get(&url).call();
        self.finish(&url, r)
    }

    pub fn remove(&self, name: &str) -> Result<Answer, ClientError> {
        let url = format!("{}/functions/{name}", self.base);
        let r = self.agent.delete(&url).call();
        self.finish(&url, r)
    }

    pub fn invoke(&self, name: &str, body: &[u8]) -> Result<Answer, ClientError> {
        let url = format!("{}/invoke/{name}", self.base);
        let r = self.agent.post(&url).send(body);
        self.finish(&url, r)
    }

    /// `PUT` of a raw body at `path` (e.g. a hand-written registration).
    pub fn put(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.put(&url).header("content-type", "application/json").send(body);
        self.finish(&url, r)
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.get(&url).call();
        self.finish(&url, r)
    }
}
