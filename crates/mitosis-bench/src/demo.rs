//! `mitosis demo`.
pub fn run(_bin: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
