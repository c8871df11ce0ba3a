//! Named access to a module's float parameters: the dotted path burn's derive gives each one
//! (`blocks.0.attn.q.weight`), its id, and its value flattened to rank 1. Checkpoints, the EMA
//! and the optimizers are written on these two functions.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::DispatchTensor;

/// The container name burn's derive gives [`crate::model::Backbone`]'s variants. Which backbone a
/// checkpoint holds is in its config, so the variant is not part of a parameter's path: a DiT's
/// weights keep the paths they had before there were other backbones.
const BACKBONE_ENUM: &str = "Enum:Backbone";

/// The dotted path of the module being visited.
#[derive(Default)]
struct ParamPath(Vec<String>);

impl ParamPath {
    fn enter(&mut self, name: &str, container: &str) {
        if container != BACKBONE_ENUM {
            self.0.push(name.to_string());
        }
    }
    fn exit(&mut self, container: &str) {
        if container != BACKBONE_ENUM {
            self.0.pop();
        }
    }
    fn join(&self) -> String {
        self.0.join(".")
    }
}

struct Visit<'a, F> {
    path: ParamPath,
    f: &'a mut F,
}

impl<F: FnMut(&str, ParamId, Tensor<1>, &[usize])> ModuleVisitor for Visit<'_, F> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let dims = value.dims();
        let n = dims.iter().product::<usize>();
        (self.f)(&self.path.join(), param.id, value.reshape([n]), &dims);
    }
}

/// Call `f(path, id, flat value, shape)` for every float parameter, in a fixed order.
/// The backend's random stream, which draws initial weights, is one per process. Everything in
/// Flick that draws from it (model, discriminator-head and probe initialisation) takes turns
/// through this lock, and a run that seeds the stream holds its turn from the seed to the last
/// draw of its initialisation: two runs started side by side in one process (the test suites, a
/// program embedding the trainer) each get the initial weights their seeds name.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    static HOLDING_RNG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `draw` holding this process's turn on the backend's random stream, first seeding it
/// with `seed` when given. Re-entrant: an initialiser called inside another's turn keeps it.
pub fn with_backend_rng<T>(device: &Device, seed: Option<u64>, draw: impl FnOnce() -> T) -> T {
    if HOLDING_RNG.with(|h| h.get()) {
        if let Some(seed) = seed {
            device.seed(seed);
        }
        return draw();
    }
    let _turn = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HOLDING_RNG.with(|h| h.set(false));
        }
    }
    HOLDING_RNG.with(|h| h.set(true));
    let _release = Release;
    if let Some(seed) = seed {
        device.seed(seed);
    }
    draw()
}

pub fn visit_params<M: Module>(module: &M, mut f: impl FnMut(&str, ParamId, Tensor<1>, &[usize])) {
    module.visit(&mut Visit {
        path: ParamPath::default(),
        f: &mut f,
    });
}

struct Shapes {
    path: ParamPath,
    out: Vec<(String, Vec<usize>)>,
}

impl ModuleVisitor for Shapes {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out
            .push((self.path.join(), param.lazy_shape().to_vec()));
    }
}

/// Every float parameter's path and shape, in the order of [`visit_params`], **without
/// initialising** them (burn's parameters are made on first use): what a checkpoint must hold
/// can be checked before any memory is spent on the model.
pub fn param_shapes<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut v = Shapes {
        path: ParamPath::default(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct Map<'a, F> {
    path: ParamPath,
    f: &'a mut F,
}

impl<F: FnMut(&str, ParamId, Tensor<1>, &[usize]) -> Option<Tensor<1>>> ModuleMapper
    for Map<'_, F>
{
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let dims = value.dims();
        let n = dims.iter().product::<usize>();
        let require_grad = value.is_require_grad();
        let autodiff = value.is_autodiff();
        let flat = value.clone().inner().reshape([n]);
        let value = match (self.f)(&self.path.join(), id, flat, &dims) {
            Some(new) => {
                assert_eq!(
                    new.dims()[0],
                    n,
                    "replacement for {} has the wrong size",
                    self.path.join()
                );
                as_leaf(new.inner().reshape(dims), autodiff, require_grad)
            }
            None => value,
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// A new parameter value as the old one was: an autodiff leaf (requiring gradients if it did)
/// where the old one was one.
fn as_leaf<const D: usize>(t: Tensor<D>, autodiff: bool, require_grad: bool) -> Tensor<D> {
    match (autodiff, require_grad) {
        (false, _) => t,
        (true, false) => t.autodiff(),
        (true, true) => t.autodiff().require_grad(),
    }
}

struct VisitRaw<'a, F> {
    path: ParamPath,
    f: &'a mut F,
}

impl<F: FnMut(&str, DispatchTensor)> ModuleVisitor for VisitRaw<'_, F> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        (self.f)(&self.path.join(), param.val().inner().into_dispatch());
    }
}

/// [`visit_params`] with each value as it is, of the parameter's shape, as burn's dispatch
/// primitive without autodiff: no reshape queued per parameter (the optimizer's update on a
/// GPU, where every queued operation costs host time).
pub fn visit_params_raw<M: Module>(module: &M, mut f: impl FnMut(&str, DispatchTensor)) {
    module.visit(&mut VisitRaw {
        path: ParamPath::default(),
        f: &mut f,
    });
}

struct MapRaw<'a, F> {
    path: ParamPath,
    f: &'a mut F,
}

impl<F: FnMut(&str, DispatchTensor) -> Option<DispatchTensor>> ModuleMapper for MapRaw<'_, F> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let dims = value.dims();
        let require_grad = value.is_require_grad();
        let autodiff = value.is_autodiff();
        let raw = value.clone().inner().into_dispatch();
        let value = match (self.f)(&self.path.join(), raw) {
            Some(new) => {
                let t = Tensor::<D>::from_dispatch(new);
                assert_eq!(
                    t.dims(),
                    dims,
                    "replacement for {} has the wrong shape",
                    self.path.join()
                );
                as_leaf(t, autodiff, require_grad)
            }
            None => value,
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// [`map_params`] on values as they are ([`visit_params_raw`]): `f(path, value)` returns the
/// new value, of the same shape, or `None` to keep the parameter.
pub fn map_params_raw<M: Module>(
    module: M,
    mut f: impl FnMut(&str, DispatchTensor) -> Option<DispatchTensor>,
) -> M {
    module.map(&mut MapRaw {
        path: ParamPath::default(),
        f: &mut f,
    })
}

/// Replace float parameters: `f(path, id, flat value without autodiff, shape)` returns the new
/// flat value (same element count), or `None` to keep the parameter. Autodiff parameters stay
/// autodiff leaves that require gradients.
pub fn map_params<M: Module>(
    module: M,
    mut f: impl FnMut(&str, ParamId, Tensor<1>, &[usize]) -> Option<Tensor<1>>,
) -> M {
    module.map(&mut Map {
        path: ParamPath::default(),
        f: &mut f,
    })
}

/// Exponential moving average of `source`'s parameters into `ema` (matched by path):
/// `ema ← decay·ema + (1 − decay)·source`.
pub fn ema_update<M: Module>(ema: M, source: &M, decay: f32) -> M {
    let mut values = std::collections::HashMap::new();
    visit_params(source, |path, _, v, _| {
        values.insert(path.to_string(), v.inner());
    });
    map_params(ema, |path, _, e, _| {
        let s = values
            .remove(path)
            .expect("EMA and source share the same parameters");
        let s = if s.device() != e.device() {
            s.to_device(&e.device())
        } else {
            s
        };
        Some(e * decay + s * (1.0 - decay))
    })
}

/// Total number of float parameters.
pub fn count<M: Module>(module: &M) -> usize {
    let mut n = 0;
    visit_params(module, |_, _, _, shape| {
        n += shape.iter().product::<usize>()
    });
    n
}

#[cfg(feature = "autodiff")]
struct Grads<'a> {
    path: ParamPath,
    grads: &'a burn::tensor::Gradients,
    out: std::collections::HashMap<String, Tensor<1>>,
}

#[cfg(feature = "autodiff")]
impl ModuleVisitor for Grads<'_> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let n = g.dims().iter().product::<usize>();
            self.out.insert(self.path.join(), g.reshape([n]));
        }
    }
}

/// The gradients of `module`'s parameters after `loss.backward()`, by path, flattened, without
/// autodiff. Parameters that got no gradient are absent.
#[cfg(feature = "autodiff")]
pub fn grads_by_path<M: Module>(
    module: &M,
    grads: &burn::tensor::Gradients,
) -> std::collections::HashMap<String, Tensor<1>> {
    let mut v = Grads {
        path: ParamPath::default(),
        grads,
        out: Default::default(),
    };
    module.visit(&mut v);
    v.out
}
