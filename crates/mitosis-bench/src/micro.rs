//! `mitosis bench micro`.
pub fn run(_bin: &std::path::Path, _sizes: &[usize], _runs: usize, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("the micro benchmark is not built yet")
}
pub fn tcp_sink(_l: std::net::SocketAddr) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
pub fn tcp_source(_t: std::net::SocketAddr, _mb: usize) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
