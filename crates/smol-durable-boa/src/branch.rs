//! Branches: which `parallel` thunk or `pipeline` item a piece of script runs for, so that
//! `phase()` in one branch sets the phase of that branch's agent calls and never its siblings'
//! (smol-wf kept one global phase, racy across concurrent branches).
//!
//! A branch starts with the phase of the branch that created it. The branch current when a
//! promise reaction is registered (an `await`, a `.then`) is recorded in its job by the host
//! hooks ([`crate::loader::Sandbox`]) and made current again while the job runs, the way
//! `AsyncLocalStorage` follows `await` in Node.

use std::cell::RefCell;

use boa_engine::{Context, JsArgs, JsData, JsResult, JsValue};
use boa_gc::{Finalize, Trace};

/// One evaluation's branches: the phase of each (index = branch id; 0 is the module's own)
/// and the one running now.
#[derive(Debug)]
struct Branches {
    phases: Vec<Option<String>>,
    current: usize,
}

thread_local! {
    // One evaluation per thread; reset when it starts.
    static BRANCHES: RefCell<Branches> = RefCell::new(Branches { phases: vec![None], current: 0 });
}

/// A branch id, carried by a promise job (the `[[HostDefined]]` of its job callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Trace, Finalize, JsData)]
#[boa_gc(empty_trace)]
pub(crate) struct BranchId(usize);

/// Starts an evaluation with only the module's own branch, without a phase.
pub(crate) fn reset() {
    BRANCHES.with(|branches| {
        *branches.borrow_mut() = Branches {
            phases: vec![None],
            current: 0,
        }
    });
}

/// The branch running now.
pub(crate) fn current() -> BranchId {
    BranchId(BRANCHES.with(|branches| branches.borrow().current))
}

/// Makes `branch` current; returns the one it replaces.
pub(crate) fn enter(branch: BranchId) -> BranchId {
    BRANCHES.with(|branches| {
        let mut branches = branches.borrow_mut();
        let previous = branches.current;
        if branch.0 < branches.phases.len() {
            branches.current = branch.0;
        }
        BranchId(previous)
    })
}

/// The phase of the running branch.
pub(crate) fn phase() -> Option<String> {
    BRANCHES.with(|branches| {
        let branches = branches.borrow();
        branches.phases.get(branches.current).cloned().flatten()
    })
}

/// Sets the phase of the running branch.
pub(crate) fn set_phase(name: String) {
    BRANCHES.with(|branches| {
        let mut branches = branches.borrow_mut();
        let current = branches.current;
        if let Some(slot) = branches.phases.get_mut(current) {
            *slot = Some(name);
        }
    });
}

/// `__sw_fork_branch()`: a new branch with the running branch's phase; returns its id.
pub(crate) fn fork_native(_: &JsValue, _: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let id = BRANCHES.with(|branches| {
        let mut branches = branches.borrow_mut();
        let inherited = branches.phases.get(branches.current).cloned().flatten();
        branches.phases.push(inherited);
        branches.phases.len() - 1
    });
    Ok(JsValue::from(id as f64))
}

/// `__sw_enter_branch(id)`: makes branch `id` current; returns the id it replaces.
pub(crate) fn enter_native(
    _: &JsValue,
    arguments: &[JsValue],
    ctx: &mut Context,
) -> JsResult<JsValue> {
    let id = arguments.get_or_undefined(0).to_number(ctx)?;
    let id = if id.is_finite() && id >= 0.0 {
        id as usize
    } else {
        0
    };
    let BranchId(previous) = enter(BranchId(id));
    Ok(JsValue::from(previous as f64))
}
