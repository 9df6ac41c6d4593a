//! `starling check FILE`: validates a definition without running it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use starling_operators::definition::Definition;
use starling_operators::plan::{plan, NodeKind};

/// Reads, parses and plans a definition; prints a summary of what would run.
pub fn check(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let def = Definition::parse(&text).map_err(anyhow::Error::from)?;
    let p = plan(&def, &HashMap::new()).map_err(anyhow::Error::from)?;
    let mut out = format!("{}: ok — dataflow `{}`\n", path.display(), p.name);
    for i in &p.inputs {
        out.push_str(&format!(
            "  input  {} ← topic {} (max_delay {} ms, idle {} ms, lateness {} ms)\n",
            i.id,
            i.topic,
            i.watermark.max_delay,
            i.watermark.idle_timeout,
            i.watermark.allowed_lateness
        ));
    }
    for n in &p.nodes {
        if matches!(n.kind, NodeKind::Input { .. }) {
            continue;
        }
        let fields: Vec<String> = n
            .schema
            .fields
            .iter()
            .map(|f| format!("{} {}", f.name, f.data_type))
            .collect();
        out.push_str(&format!("  node   {} → ({})\n", n.id, fields.join(", ")));
    }
    for o in &p.outputs {
        out.push_str(&format!(
            "  output {} from {} ({:?})\n",
            o.name, p.nodes[o.node].id, o.emit
        ));
    }
    for t in &p.new_topics {
        out.push_str(&format!("  topic  {} (created on install)\n", t.name));
    }
    Ok(out)
}
