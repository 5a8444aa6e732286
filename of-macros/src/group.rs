//! Grouping: consecutive register statements become one fused `asm!` block, unless fusing would
//! change what the code means; then a new block starts.
//!
//! A new block starts before a statement whose right-hand side mentions the binding (it must
//! see the statements before it) or uses a value the current block read, and wherever the
//! block could not be one `asm!` block ([`check`]): a read in a block that ends with a jump, or
//! more values than operand registers. (Run-time shift counts never split a block: each waits
//! in an operand register and is swapped into rcx for its shift alone, [`crate::emit`].)

use crate::diag;
use crate::emit;
use crate::map::{POOL, RCX, covered, view};
use crate::parse::{Access, pat_idents, scan_tokens};
use proc_macro2::Span;
use quote::quote;
use syn::{Block, Expr, Ident, Stmt};

/// The registers a group of statements touches, and what else shapes its `asm!` block.
pub(crate) struct Footprint {
    /// General-purpose registers (encoding numbers) the group writes through the map.
    pub(crate) written: Vec<usize>,
    /// General-purpose registers the group reads or writes through the map.
    pub(crate) touched: Vec<usize>,
    /// Whether a statement writes rip.
    pub(crate) jumps: bool,
    /// How many statements shift by a run-time count (each count is swapped into rcx for its
    /// shift: rcx cannot hold an operand).
    pub(crate) shifts: usize,
    /// Where errors about the whole group point: its first statement.
    pub(crate) span: Span,
}

impl Footprint {
    /// The footprint of `accesses`.
    pub(crate) fn of(accesses: &[Access]) -> Self {
        let mut fp = Footprint {
            written: vec![],
            touched: vec![],
            jumps: false,
            shifts: 0,
            span: accesses.first().map_or(Span::call_site(), Access::span),
        };
        for a in accesses {
            fp.touched.extend(covered(a.view()));
            if a.writes() {
                fp.written.extend(covered(a.view()));
            }
            fp.jumps |= a.jumps();
            fp.shifts += usize::from(a.runtime_shift());
        }
        fp
    }

    /// The registers operands may be pinned to, most preferred LAST (for `pop`): never one the
    /// block writes through the map (its value would change under the instructions that
    /// follow), never rcx when a count is swapped into it; registers the block only reads come
    /// last.
    pub(crate) fn operand_registers(&self) -> Vec<usize> {
        let mut free: Vec<usize> = POOL
            .iter()
            .copied()
            .filter(|n| !(self.written.contains(n) || (self.shifts > 0 && *n == RCX)))
            .collect();
        free.sort_by_key(|n| self.touched.contains(n));
        free.reverse();
        free
    }
}

/// Why `accesses` cannot be one `asm!` block, if they cannot.
pub(crate) fn check(accesses: &[Access]) -> syn::Result<()> {
    let fp = Footprint::of(accesses);
    if fp.jumps && accesses.iter().any(|a| !a.writes()) {
        return Err(diag::read_in_jumping_block(fp.span));
    }
    if let Some(i) = accesses.iter().position(Access::jumps)
        && i + 1 != accesses.len()
    {
        return Err(diag::after_rip_statement(accesses[i + 1].span()));
    }
    let needed = accesses
        .iter()
        .filter(|a| a.needs_operand_register())
        .count();
    if needed > fp.operand_registers().len() {
        return Err(diag::out_of_registers(fp.span));
    }
    Ok(())
}

/// The register statements of one block of code not yet emitted; always a valid `asm!` block
/// ([`check`]).
#[derive(Default)]
pub(crate) struct Group {
    pending: Vec<Access>,
    /// Map bytes (`start..end`) written by the block that [`Group::push`] had to end early
    /// (out of operand registers, a read next to a jump): a statement that reads them would
    /// read a value compiled code may have replaced at the boundary the user cannot see, until
    /// a statement writes them again (a map write is a memory write: a 4-byte store to a
    /// register's slot leaves its upper 4 bytes alone). Cleared at a boundary in the source
    /// ([`Group::flush`] from outside).
    lost: Vec<(u32, u32)>,
}

impl Group {
    /// Whether a statement with right-hand side `value` must start a new block: it reads
    /// registers (it must see the statements before it) or uses a value the group read.
    /// Reading in `value` a register the group writes is an error: the expression runs after
    /// the group's `asm!` block, when compiled code may already have reused the register.
    pub(crate) fn must_split_before(&self, value: &Expr, bindings: &[Ident]) -> syn::Result<bool> {
        let scan = scan_tokens(&quote!(#value), bindings);
        let written: Vec<usize> = self
            .pending
            .iter()
            .filter(|g| g.writes())
            .flat_map(|g| covered(g.view()))
            .collect();
        for (field, name) in &scan.fields {
            if let Some(v) = view(name)
                && let Some(n) = covered(v).into_iter().find(|n| written.contains(n))
            {
                return Err(diag::written_then_read(field, name, n));
            }
        }
        let bound = self.pending.iter().flat_map(|g| match g {
            Access::Read { pat, .. } => pat_idents(pat),
            _ => vec![],
        });
        let uses_read = bound.into_iter().any(|i| scan.idents.contains(&i));
        Ok(!scan.fields.is_empty() || scan.mentions_binding || uses_read)
    }

    /// Adds `a`, emitting the pending statements into `out` first if `a` cannot join them.
    pub(crate) fn push(&mut self, a: Access, out: &mut Vec<Stmt>) -> syn::Result<()> {
        // After a rip write control never comes back: no split makes a statement reachable.
        if self.pending.last().is_some_and(Access::jumps) {
            return Err(diag::after_rip_statement(a.span()));
        }
        self.pending.push(a);
        if check(&self.pending).is_err() {
            let a = self.pending.pop().expect("just pushed");
            let written: Vec<(u32, u32)> = self
                .pending
                .iter()
                .filter(|g| g.writes())
                .map(|g| (g.view().off, g.view().off + g.view().size))
                .collect();
            self.flush(out)?;
            self.lost = written;
            self.pending.push(a);
            check(&self.pending)?;
        }
        let a = self.pending.last().expect("just pushed");
        let (start, end) = (a.view().off, a.view().off + a.view().size);
        if !matches!(a, Access::Write { .. })
            && self.lost.iter().any(|&(s, e)| s < end && start < e)
        {
            return Err(diag::read_across_a_forced_split(a.span()));
        }
        if matches!(a, Access::Write { .. }) {
            // Written again: those bytes no longer hold the lost value.
            let mut kept = vec![];
            for &(s, e) in &self.lost {
                if s < start {
                    kept.push((s, e.min(start)));
                }
                if e > end {
                    kept.push((s.max(end), e));
                }
            }
            self.lost = kept;
        }
        Ok(())
    }

    /// Emits the pending statements (if any) into `out` as one `asm!` block and the `let`s
    /// around it.
    pub(crate) fn flush(&mut self, out: &mut Vec<Stmt>) -> syn::Result<()> {
        self.lost.clear();
        if self.pending.is_empty() {
            return Ok(());
        }
        let ts = emit::asm_block(&self.pending);
        self.pending.clear();
        let b: Block = syn::parse2(quote!({ #ts }))?;
        out.extend(b.stmts);
        Ok(())
    }
}
