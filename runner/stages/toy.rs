//! The built-in toy node kinds, planned from `[toy]` through the same [`Stage`]/[`NodeKind`]
//! mechanism every real stage uses, so that the runner is testable end to end without models.
//!
//! `toy_square[x=v]` writes `value.json` = {x, y = x² + offset} (optionally sleeping, failing, panicking or
//! producing NaN, which is caught as a non-finite-output failure); `toy_sum` adds every square.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::contract::{ContractError, Output};

use crate::dag::store::Store;
use crate::dag::{
    Label, NodeCtx, NodeError, NodeKind, NodeSpec, Plan, PlanBuilder, PlanError, Stage,
};
use crate::spec::ResolvedSpec;

pub struct ToyStage;

impl Stage for ToyStage {
    fn name(&self) -> &'static str {
        "toy"
    }

    fn plan(&self, spec: &ResolvedSpec, plan: &mut PlanBuilder<'_>) -> Result<(), PlanError> {
        let Some(toy) = &spec.spec.toy else {
            return Ok(());
        };
        let mut squares = Vec::new();
        for &x in &toy.values {
            let mut params = json!({ "x": x, "offset": toy.offset });
            // Only the nodes that fail carry the flag, so other nodes keep their keys.
            if toy.fail_on.contains(&x) {
                params["fail"] = json!(true);
            }
            if toy.nan_on.contains(&x) {
                params["nan"] = json!(true);
            }
            if toy.panic_on.contains(&x) {
                params["panic"] = json!(true);
            }
            let node = NodeSpec::new(format!("toy_square[x={x}]"), "toy_square", params)
                .label(Label {
                    value: Some(x),
                    ..Label::default()
                })
                .hints(json!({ "sleep_ms": toy.sleep_ms }));
            squares.push(plan.add(node)?);
        }
        if toy.sum {
            let mut node = NodeSpec::new("toy_sum", "toy_sum", json!({}));
            for (i, r) in squares.into_iter().enumerate() {
                node = node.input(format!("part{i}"), r);
            }
            plan.add(node)?;
        }
        Ok(())
    }

    /// One line per finished `toy_sum` node: exercises the engine's summary hook.
    fn summary(&self, plan: &Plan, store: &Store) -> Option<String> {
        let lines: Vec<String> = plan
            .nodes
            .iter()
            .filter(|n| n.kind == "toy_sum")
            .filter_map(|n| {
                let v = ToyTotal::read(&store.out_dir(&n.key)).ok()?;
                Some(format!("  {:<40}{:>12}", n.id, serde_json::json!(v.sum)))
            })
            .collect();
        (!lines.is_empty()).then(|| format!("toy sums:\n{}", lines.join("\n")))
    }
}

#[derive(Deserialize)]
struct SquareParams {
    x: i64,
    offset: i64,
    #[serde(default)]
    fail: bool,
    #[serde(default)]
    nan: bool,
    #[serde(default)]
    panic: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ToyError {
    #[error("toy_square[x={0}] was asked to fail (toy.fail_on)")]
    AskedToFail(i64),
    #[error("non-finite output y = {y} for x = {x}")]
    NonFinite { x: i64, y: f64 },
}

/// `value.json` of a `toy_square` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToyValue {
    pub x: i64,
    pub y: f64,
}

/// `sum.json` of a `toy_sum` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToyTotal {
    pub sum: f64,
    pub parts: usize,
}

/// The toy outputs are compact JSON (one line), unlike the pipeline's pretty files.
fn write_compact<T: Serialize>(path: &std::path::Path, v: &T) -> Result<(), ContractError> {
    let bytes = serde_json::to_vec(v).map_err(|e| ContractError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    crate::fsx::write_atomic(path, &bytes).map_err(|e| ContractError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Output for ToyValue {
    const FILE: &'static str = "value.json";
    fn write(&self, dir: &std::path::Path) -> Result<(), ContractError> {
        write_compact(&dir.join(Self::FILE), self)
    }
}

impl Output for ToyTotal {
    const FILE: &'static str = "sum.json";
    fn write(&self, dir: &std::path::Path) -> Result<(), ContractError> {
        write_compact(&dir.join(Self::FILE), self)
    }
}

pub struct ToySquare;

impl NodeKind for ToySquare {
    fn name(&self) -> &'static str {
        "toy_square"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let p: SquareParams = ctx.params_as()?;
        let sleep_ms = ctx
            .hints
            .get("sleep_ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        ctx.progress(0, 1, "squaring");
        std::thread::sleep(std::time::Duration::from_millis(sleep_ms));
        if p.panic {
            panic!("toy_square[x={}] was asked to panic (toy.panic_on)", p.x);
        }
        if p.fail {
            return Err(ToyError::AskedToFail(p.x).into());
        }
        let y = if p.nan {
            f64::NAN
        } else {
            (p.x * p.x + p.offset) as f64
        };
        if !y.is_finite() {
            return Err(ToyError::NonFinite { x: p.x, y }.into());
        }
        ctx.log(&format!("x = {}, y = {y}", p.x));
        ToyValue { x: p.x, y }.write(ctx.out_dir)?;
        ctx.progress(1, 1, "done");
        Ok(())
    }
}

pub struct ToySum;

impl NodeKind for ToySum {
    fn name(&self) -> &'static str {
        "toy_sum"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let mut sum = 0.0;
        for input in ctx.inputs {
            sum += ToyValue::read(&input.dir)?.y;
        }
        ToyTotal {
            sum,
            parts: ctx.inputs.len(),
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}
