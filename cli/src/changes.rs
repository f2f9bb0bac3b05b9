//! `--change` of `rbuild import`: Dockerfile instructions applied to the new image's config,
//! limited to the ones `docker import --change` accepts.

use anyhow::{bail, Result};
use builder::dockerfile::shell::{Lex, NoVars};
use builder::dockerfile::{parse, Instruction};
use oci::image::ImageConfig;

pub fn apply(config: &mut ImageConfig, change: &str) -> Result<()> {
    let tree = parse(change).map_err(|e| anyhow::anyhow!("{e}"))?;
    let [node] = tree.ast.children.as_slice() else {
        bail!("expected exactly one instruction");
    };
    let allowed = [
        "cmd",
        "entrypoint",
        "env",
        "expose",
        "label",
        "onbuild",
        "user",
        "volume",
        "workdir",
    ];
    let keyword = node.value.to_lowercase();
    if !allowed.contains(&keyword.as_str()) {
        bail!(
            "{} is not a valid change command (allowed: {})",
            keyword.to_uppercase(),
            allowed.join(", ").to_uppercase()
        );
    }
    let instruction = Instruction::from_node(node).map_err(|e| anyhow::anyhow!("{e}"))?;
    builder::image_config::apply(config, &instruction, &Lex::default(), &NoVars)
        .map(drop)
        .map_err(anyhow::Error::msg)
}
