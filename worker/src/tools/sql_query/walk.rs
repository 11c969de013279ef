//! The rules checked inside an allowed statement, by visiting every query, expression and
//! relation of its tree: writable CTEs, `SELECT ... INTO`, `FOR UPDATE/SHARE`, and calls of
//! dangerous functions in any position (select list, WHERE, FROM, functional notation).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    AccessExpr, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query, Select,
    SetExpr, Statement, TableFactor, Value, Visit, Visitor,
};

use super::functions;
use super::policy::{Limits, Refusal, Rule};

/// What the walk saw in an allowed statement.
pub struct Found {
    pub tables: Vec<String>,
    pub functions: Vec<String>,
}

pub fn walk(statement: &Statement, limits: Limits) -> Result<Found, Refusal> {
    let top = match statement {
        Statement::Query(query) => Some(&**query as *const Query),
        _ => None,
    };
    let mut walker = Walker {
        limits,
        top,
        tables: BTreeSet::new(),
        functions: BTreeSet::new(),
        function_in_from: false,
    };
    match statement.visit(&mut walker) {
        ControlFlow::Break(refusal) => Err(refusal),
        ControlFlow::Continue(()) => Ok(Found {
            tables: walker.tables.into_iter().collect(),
            functions: walker.functions.into_iter().collect(),
        }),
    }
}

struct Walker {
    limits: Limits,
    /// The statement's own query, which may be the whole statement; any other is nested.
    top: Option<*const Query>,
    tables: BTreeSet<String>,
    functions: BTreeSet<String>,
    /// The next relation is the name of a function in FROM, not a table.
    function_in_from: bool,
}

fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident.value.clone(),
            None => part.to_string(),
        })
        .collect()
}

impl Walker {
    fn call(
        &mut self,
        parts: Vec<String>,
        args: Option<&FunctionArguments>,
    ) -> ControlFlow<Refusal> {
        let Some(name) = parts.last().map(|n| n.to_ascii_lowercase()) else {
            return ControlFlow::Continue(());
        };
        if let Some(why) = functions::denied(&parts) {
            return ControlFlow::Break(Refusal::new(
                Rule::DangerousFunction,
                format!("{}() {why}", parts.join(".")),
            ));
        }
        if name == "pg_sleep" {
            self.sleep(args)?;
        }
        self.functions.insert(name);
        ControlFlow::Continue(())
    }

    /// `pg_sleep(n)` passes only with a literal number of seconds within the statement timeout.
    fn sleep(&self, args: Option<&FunctionArguments>) -> ControlFlow<Refusal> {
        let seconds = match args {
            Some(FunctionArguments::List(list)) if list.args.len() == 1 => match &list.args[0] {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value))) => {
                    match &value.value {
                        Value::Number(n, _) => n.parse::<f64>().ok(),
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        };
        let max = self.limits.max_sleep.as_secs_f64();
        match seconds {
            Some(s) if s.is_finite() && s <= max => ControlFlow::Continue(()),
            _ => ControlFlow::Break(Refusal::new(
                Rule::SleepBeyondTimeout,
                format!(
                    "pg_sleep takes a literal number of seconds up to the statement timeout ({max} s)"
                ),
            )),
        }
    }
}

impl Visitor for Walker {
    type Break = Refusal;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Refusal> {
        let nested = self.top != Some(query as *const Query);
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                if is_dml(&cte.query.body) {
                    return ControlFlow::Break(Refusal::new(
                        Rule::WritableCte,
                        format!("the CTE {} modifies data", cte.alias.name),
                    ));
                }
            }
        }
        if nested && is_dml(&query.body) {
            return ControlFlow::Break(Refusal::new(
                Rule::WritableCte,
                "a nested statement modifies data",
            ));
        }
        if !query.locks.is_empty() {
            return ControlFlow::Break(Refusal::new(
                Rule::Lock,
                "FOR UPDATE/FOR SHARE locks rows; drop the locking clause",
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Refusal> {
        if select.into.is_some() {
            return ControlFlow::Break(Refusal::new(
                Rule::SelectInto,
                "SELECT ... INTO creates a table; select the rows instead",
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<Refusal> {
        if !std::mem::take(&mut self.function_in_from) {
            self.tables.insert(relation.to_string());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Refusal> {
        match factor {
            // `FROM f(...)`: a function in FROM, parsed as a table with arguments.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.function_in_from = true;
                self.call(name_parts(name), None)
            }
            TableFactor::Function { name, .. } => self.call(name_parts(name), None),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Refusal> {
        match expr {
            Expr::Function(function) => self.call(name_parts(&function.name), Some(&function.args)),
            // `(value).f` is Postgres' functional notation for `f(value)`.
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for access in access_chain {
                    if let AccessExpr::Dot(Expr::Identifier(ident)) = access {
                        self.call(vec![ident.value.clone()], None)?;
                    }
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

fn is_dml(body: &SetExpr) -> bool {
    matches!(
        body,
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
    )
}
