//! Imports and compile-time hooks: `workflow:extra`, relative files inside the workflow's
//! directory, and nothing else; no `eval` or `new Function`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use std::collections::HashMap;

use boa_engine::builtins::function::OrdinaryFunction;
use boa_engine::builtins::promise::{OperationType, Promise, PromiseState};
use boa_engine::context::HostHooks;
use boa_engine::job::JobCallback;
use boa_engine::module::{ModuleLoader, ModuleRequest, Referrer};
use boa_engine::object::builtins::JsFunction;
use boa_engine::object::builtins::JsPromise;
use boa_engine::realm::Realm;
use boa_engine::{Context, JsError, JsNativeError, JsResult, JsString, Module, Source};
use boa_engine::{JsObject, JsValue};
use smol_durable_core::{ScriptError, ScriptErrorKind};

/// The `workflow:extra` module.
const EXTRA: &str = "const extra = globalThis.__sw_extra;\nexport const { sleep, waitFor, waitForAny, signal, runId } = extra;\nexport default extra;\n";

/// Loads `workflow:extra` and relative files confined to the root workflow's directory. Each
/// file is loaded once (boa leaves that to the host): imports that form a cycle, or two
/// importers of one file, share one module instance.
pub(crate) struct WorkflowLoader {
    root: PathBuf,
    modules: RefCell<HashMap<PathBuf, Module>>,
    extra: RefCell<Option<Module>>,
    /// The first import this loader refused or could not read, to tell an import failure
    /// from an error the script threw (boa reports both as the evaluation's rejection).
    refused: RefCell<Option<String>>,
}

impl WorkflowLoader {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            modules: RefCell::new(HashMap::new()),
            extra: RefCell::new(None),
            refused: RefCell::new(None),
        }
    }

    /// `error` as an [`ScriptErrorKind::Import`] error when it is this loader's refusal.
    pub fn classify(&self, error: ScriptError) -> ScriptError {
        match self.refused.borrow().as_deref() {
            Some(refusal) if error.message().contains(refusal) => {
                let import = ScriptError::new(ScriptErrorKind::Import, error.message());
                match error.location() {
                    Some(location) => import.with_location(location),
                    None => import,
                }
            }
            _ => error,
        }
    }

    fn refuse(&self, message: String) -> JsError {
        self.refused
            .borrow_mut()
            .get_or_insert_with(|| message.clone());
        JsNativeError::typ().with_message(message).into()
    }

    /// Records the root module under its real path, so importing it back reuses it.
    pub fn register(&self, path: &Path, module: &Module) {
        if let Ok(real) = std::fs::canonicalize(path) {
            self.modules.borrow_mut().insert(real, module.clone());
        }
    }

    fn resolve(&self, referrer: &Referrer, specifier: &str) -> JsResult<PathBuf> {
        if !(specifier.starts_with("./") || specifier.starts_with("../")) {
            return Err(self.refuse(format!(
                "import of {specifier:?} is not allowed in workflows: only \"workflow:extra\" and \
                 relative files inside the workflow's directory can be imported"
            )));
        }
        let base = match referrer {
            Referrer::Module(module) => module
                .path()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.root.clone()),
            _ => self.root.clone(),
        };
        let joined = smol_durable_core::paths::normalize(&base.join(specifier));
        let real = smol_durable_core::paths::confined(&self.root, &joined).map_err(|error| {
            let message = match error {
                smol_durable_core::paths::ConfineError::Outside { .. } => {
                    format!("import of {specifier:?} resolves outside the workflow's directory")
                }
                other => format!("cannot import {specifier:?}: {other}"),
            };
            self.refuse(message)
        })?;
        Ok(real)
    }
}

impl ModuleLoader for WorkflowLoader {
    async fn load_imported_module(
        self: Rc<Self>,
        referrer: Referrer,
        request: ModuleRequest,
        context: &RefCell<&mut Context>,
    ) -> JsResult<Module> {
        let specifier = request.specifier().to_std_string_escaped();
        if specifier == "workflow:extra" {
            if let Some(module) = self.extra.borrow().clone() {
                return Ok(module);
            }
            let source = Source::from_bytes(EXTRA.as_bytes());
            let module = Module::parse(source, None, &mut context.borrow_mut())?;
            *self.extra.borrow_mut() = Some(module.clone());
            return Ok(module);
        }
        let path = self.resolve(&referrer, &specifier)?;
        if let Some(module) = self.modules.borrow().get(&path).cloned() {
            return Ok(module);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|error| self.refuse(format!("cannot read {}: {error}", path.display())))?;
        let source = Source::from_bytes(text.as_bytes()).with_path(&path);
        let module = Module::parse(source, None, &mut context.borrow_mut())?;
        self.modules.borrow_mut().insert(path, module.clone());
        Ok(module)
    }
}

/// Refuses to compile strings at run time (`eval`, `new Function`, and the async/generator
/// function constructors, which reach the same hook), tracks unhandled rejections, and carries
/// the current branch across `await` (see [`crate::branch`]).
#[derive(Default)]
pub(crate) struct Sandbox {
    unhandled: RefCell<Vec<JsObject<Promise>>>,
}

impl Sandbox {
    /// The reason of a rejection still unhandled, if any.
    pub fn take_unhandled_rejection(&self) -> Option<JsValue> {
        let mut unhandled = self.unhandled.borrow_mut();
        let promise = unhandled.first()?.clone();
        unhandled.clear();
        match JsPromise::from_object(promise.upcast()).ok()?.state() {
            PromiseState::Rejected(reason) => Some(reason),
            _ => None,
        }
    }
}

impl HostHooks for Sandbox {
    fn promise_rejection_tracker(
        &self,
        promise: &JsObject<Promise>,
        operation: OperationType,
        _context: &mut Context,
    ) {
        let mut unhandled = self.unhandled.borrow_mut();
        match operation {
            OperationType::Reject => unhandled.push(promise.clone()),
            OperationType::Handle => unhandled.retain(|tracked| tracked != promise),
        }
    }

    /// Records the branch current where a promise reaction is registered (an `await`, a
    /// `.then`), so the reaction runs in it.
    fn make_job_callback(&self, callback: JsFunction, _context: &mut Context) -> JobCallback {
        crate::stalls::active();
        JobCallback::new(callback, crate::branch::current())
    }

    fn call_job_callback(
        &self,
        job: &JobCallback,
        this: &JsValue,
        args: &[JsValue],
        context: &mut Context,
    ) -> JsResult<JsValue> {
        let branch = job
            .host_defined()
            .as_any()
            .downcast_ref::<crate::branch::BranchId>()
            .copied();
        let built_in = !job.callback().is::<OrdinaryFunction>();
        crate::stalls::observe(built_in, || {
            let Some(branch) = branch else {
                return job.callback().call(this, args, context);
            };
            let previous = crate::branch::enter(branch);
            let result = job.callback().call(this, args, context);
            crate::branch::enter(previous);
            result
        })
    }

    fn ensure_can_compile_strings(
        &self,
        _realm: Realm,
        _parameters: &[JsString],
        _body: &JsString,
        _direct: bool,
        _context: &mut Context,
    ) -> JsResult<()> {
        Err(JsNativeError::typ()
            .with_message("eval and new Function are not allowed in workflows")
            .into())
    }
}
