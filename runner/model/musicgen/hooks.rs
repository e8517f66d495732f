//! Hooks on decoder block outputs: capture (for probes) and injection (for steering).
//!
//! A block output is the residual stream right after decoder layer `l` (before the final layer norm),
//! shape `[batch, positions, hidden]`. During classifier-free-guidance generation the batch holds the
//! conditional rows first and the unconditional rows after them, so a hook that edits every row
//! edits both branches.

use candle_core::{DType, Tensor};

use super::error::{MusicgenError, Result};

/// Called by the decoder after every block. `step` is the generation step (0 for a teacher-forced
/// pass). Return `Some(h')` to replace the block output (same shape), `None` to keep it.
/// Implementations hold their own state; the decoder calls layers in order 0..L within a step.
pub trait LayerHook {
    fn on_block_output(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>>;
}

/// Leaves every block output unchanged.
pub struct NoHook;

impl LayerHook for NoHook {
    fn on_block_output(&mut self, _: usize, _: usize, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

impl<H: LayerHook + ?Sized> LayerHook for &mut H {
    fn on_block_output(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>> {
        (**self).on_block_output(layer, step, h)
    }
}

/// Runs `A` then `B` on A's result, e.g. `(inject, capture)` records the steered stream.
impl<A: LayerHook, B: LayerHook> LayerHook for (A, B) {
    fn on_block_output(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>> {
        let a = self.0.on_block_output(layer, step, h)?;
        let b = self
            .1
            .on_block_output(layer, step, a.as_ref().unwrap_or(h))?;
        Ok(b.or(a))
    }
}

/// One hook per clip of a batched generation. Row `i`'s hook sees exactly what it would see in a
/// one-clip generation: `[1 or 2, positions, hidden]`, its conditional row then (with guidance) its
/// unconditional twin, and its edits land on those rows only. The rows are copied out and back, so
/// every hook's view is bit-identical to the unbatched one (docs/design.md, batched generation).
pub struct RowHooks<'a> {
    hooks: Vec<&'a mut dyn LayerHook>,
    guided: bool,
}

impl<'a> RowHooks<'a> {
    /// `hooks[i]` for clip `i`; `guided` as the generation's `guidance_scale != 1`.
    pub fn new(hooks: Vec<&'a mut dyn LayerHook>, guided: bool) -> Self {
        Self { hooks, guided }
    }
}

impl LayerHook for RowHooks<'_> {
    fn on_block_output(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>> {
        let b = self.hooks.len();
        let rows = if self.guided { 2 * b } else { b };
        if h.dim(0)? != rows {
            return Err(MusicgenError::Input(format!(
                "{b} row hooks for a block output of {} rows",
                h.dim(0)?
            )));
        }
        if b == 1 {
            return self.hooks[0].on_block_output(layer, step, h);
        }
        let mut cond = Vec::with_capacity(b);
        let mut uncond = Vec::with_capacity(b);
        let mut changed = false;
        for (i, hook) in self.hooks.iter_mut().enumerate() {
            let view = if self.guided {
                Tensor::cat(&[&h.narrow(0, i, 1)?, &h.narrow(0, b + i, 1)?], 0)?
            } else {
                h.narrow(0, i, 1)?
            };
            let out = match hook.on_block_output(layer, step, &view)? {
                Some(o) => {
                    changed = true;
                    o
                }
                None => view,
            };
            cond.push(out.narrow(0, 0, 1)?);
            if self.guided {
                uncond.push(out.narrow(0, 1, 1)?);
            }
        }
        if !changed {
            return Ok(None);
        }
        cond.extend(uncond);
        Ok(Some(Tensor::cat(&cond, 0)?))
    }
}

/// Records every block output of every step: `steps[step][layer]` is `[batch, positions, hidden]`.
#[derive(Default)]
pub struct CaptureHook {
    pub steps: Vec<Vec<Tensor>>,
}

impl LayerHook for CaptureHook {
    fn on_block_output(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>> {
        while self.steps.len() <= step {
            self.steps.push(Vec::new());
        }
        let slot = &mut self.steps[step];
        if slot.len() != layer {
            return Err(MusicgenError::Input(format!(
                "capture hook saw layer {layer} of step {step} out of order"
            )));
        }
        slot.push(h.clone());
        Ok(None)
    }
}

/// Adds `eta(layer, step) · q_layer` to the output of every layer that has a direction, at every
/// position and batch row of the step (both guidance branches). A zero `eta` leaves the tensor as is.
pub struct InjectHook<F: FnMut(usize, usize) -> f64> {
    directions: Vec<Option<Tensor>>,
    eta: F,
}

impl<F: FnMut(usize, usize) -> f64> InjectHook<F> {
    /// `directions[l]` is `Some(q_l)` with shape `[hidden]` for steered layers.
    pub fn new(directions: Vec<Option<Tensor>>, eta: F) -> Self {
        Self { directions, eta }
    }
}

impl<F: FnMut(usize, usize) -> f64> LayerHook for InjectHook<F> {
    fn on_block_output(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>> {
        let Some(Some(q)) = self.directions.get(layer) else {
            return Ok(None);
        };
        let eta = (self.eta)(layer, step);
        if eta == 0.0 {
            return Ok(None);
        }
        let add = (q.to_device(h.device())?.to_dtype(h.dtype())? * eta)?;
        Ok(Some(h.broadcast_add(&add)?))
    }
}

/// How a layer's block outputs are pooled over time for probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Mean,
    Last,
    Max,
}

impl std::str::FromStr for Pool {
    type Err = MusicgenError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pool::Mean),
            "last" => Ok(Pool::Last),
            "max" => Ok(Pool::Max),
            _ => Err(MusicgenError::Input(format!(
                "unknown pooling {s:?} (expected mean, last or max)"
            ))),
        }
    }
}

impl Pool {
    /// Pools `[batch, positions, hidden]` to `[batch, hidden]` in f32.
    pub fn apply(self, h: &Tensor) -> Result<Tensor> {
        let h = h.to_dtype(DType::F32)?;
        let t = h.dim(1)?;
        if t == 0 {
            return Err(MusicgenError::Input("cannot pool an empty sequence".into()));
        }
        Ok(match self {
            Pool::Mean => h.mean(1)?,
            Pool::Last => h.narrow(1, t - 1, 1)?.squeeze(1)?,
            Pool::Max => h.max(1)?,
        })
    }
}
