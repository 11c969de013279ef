//! `UPDATE` and `DELETE` need a WHERE that selects rows. Refused: no WHERE; a WHERE, or any
//! branch of its top-level OR, that reads no column (`true`, `1 = 1`, `NOT false`, `$1`); a
//! column compared with itself (`id = id`); `x IS NULL OR x IS NOT NULL`. This is a guard
//! against the common mistakes, not a proof: the approver and the role remain the real limits.

use std::ops::ControlFlow;

use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Visit, Visitor};

use super::policy::{Refusal, Rule};

pub fn check(selection: Option<&Expr>, statement: &str) -> Result<(), Refusal> {
    let refuse = |why: String| Err(Refusal::new(Rule::UnboundedWrite, why));
    let Some(selection) = selection else {
        return refuse(format!(
            "{statement} without WHERE would touch every row; add a WHERE that selects rows"
        ));
    };
    let mut branches = Vec::new();
    disjuncts(selection, &mut branches);
    for branch in &branches {
        if !reads_a_column(branch) {
            return refuse(format!(
                "{statement} ... WHERE {selection}: {branch} reads no column, so it is always \
                 true or always false"
            ));
        }
        if compares_with_itself(branch) {
            return refuse(format!(
                "{statement} ... WHERE {selection}: {branch} compares a value with itself"
            ));
        }
    }
    let rendered: Vec<String> = branches.iter().map(|b| b.to_string()).collect();
    for branch in &branches {
        if let Expr::IsNull(inner) = branch
            && rendered.contains(&Expr::IsNotNull(inner.clone()).to_string())
        {
            return refuse(format!(
                "{statement} ... WHERE {selection}: {inner} IS NULL OR {inner} IS NOT NULL is \
                 always true"
            ));
        }
    }
    Ok(())
}

/// The branches of a top-level OR, looking through parentheses.
fn disjuncts<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::Nested(inner) => disjuncts(inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => {
            disjuncts(left, out);
            disjuncts(right, out);
        }
        other => out.push(other),
    }
}

fn reads_a_column(expr: &Expr) -> bool {
    struct Columns;
    impl Visitor for Columns {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    expr.visit(&mut Columns).is_break()
}

/// `a = a`, `a >= a`, `a <= a`, `a IS NOT DISTINCT FROM a`, and `NOT (a <> a)` and the like.
fn compares_with_itself(expr: &Expr) -> bool {
    let same = |left: &Expr, right: &Expr| strip(left).to_string() == strip(right).to_string();
    match strip(expr) {
        Expr::BinaryOp { left, op, right } => {
            matches!(
                op,
                BinaryOperator::Eq | BinaryOperator::GtEq | BinaryOperator::LtEq
            ) && same(left, right)
        }
        Expr::IsNotDistinctFrom(left, right) => same(left, right),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => match strip(expr) {
            Expr::BinaryOp { left, op, right } => {
                matches!(
                    op,
                    BinaryOperator::NotEq | BinaryOperator::Lt | BinaryOperator::Gt
                ) && same(left, right)
            }
            Expr::IsDistinctFrom(left, right) => same(left, right),
            _ => false,
        },
        _ => false,
    }
}

fn strip(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => strip(inner),
        other => other,
    }
}
