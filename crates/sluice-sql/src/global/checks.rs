//! What whole-input windows refuse, before any data is read: windows that are not
//! whole-input aggregates of row-by-row input (`PARTITION BY`, `ORDER BY`, frames, ranking,
//! `DISTINCT`/`FILTER`, windows over grouped, joined or limited rows, windows in
//! subqueries), each refused naming the window and the reason; and the analysis of a
//! window operator that passes into what pass 1 computes.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    lit, Expr, LogicalPlan, Projection, Window, WindowFrameBound, WindowFunctionDefinition,
};

use super::state::{Kind, Needs, Numeric};
use super::{Arg, Call, Site};
use crate::plan;
use crate::SqlError;

pub(super) fn refuse(window: &Expr, reason: impl Into<String>) -> SqlError {
    SqlError::GlobalWindow {
        window: window.to_string(),
        reason: reason.into(),
    }
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
        ))
    })
    .unwrap_or(true)
}

/// Windows in a subquery would need their own input rows, which pass 1 does not see.
pub(super) fn refuse_windows_in_subqueries(logical: &LogicalPlan) -> Result<(), SqlError> {
    let count = |with_subqueries: bool| {
        let mut found: Option<Expr> = None;
        let mut n = 0usize;
        let mut visit = |node: &LogicalPlan| {
            if let LogicalPlan::Window(w) = node {
                n += 1;
                found = w.window_expr.first().cloned();
            }
            Ok(TreeNodeRecursion::Continue)
        };
        let _ = if with_subqueries {
            logical.apply_with_subqueries(&mut visit)
        } else {
            logical.apply(&mut visit)
        };
        (n, found)
    };
    let (top, _) = count(false);
    let (all, example) = count(true);
    if all != top {
        let window = example.unwrap_or_else(|| lit("window"));
        return Err(refuse(
            &window,
            "it is inside a subquery; whole-input windows are computed only in the query's \
             own SELECTs (move the window out of the subquery, or use --windows chunk)",
        ));
    }
    Ok(())
}

/// Checks one window operator and plans its pass-1 query.
pub(super) fn analyse(ctx: &SessionContext, window: &Window) -> Result<Site, SqlError> {
    let mut args: Vec<Expr> = Vec::new();
    let mut calls = Vec::with_capacity(window.window_expr.len());
    let input_len = window.input.schema().fields().len();
    for (j, expr) in window.window_expr.iter().enumerate() {
        let inner = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        let Expr::WindowFunction(function) = inner else {
            return Err(refuse(expr, "it is not a window function call"));
        };
        let (kind, arg) = check_call(expr, function)?;
        let index = match args.iter().position(|a| *a == arg) {
            Some(i) => i,
            None => {
                args.push(arg);
                args.len() - 1
            }
        };
        calls.push(Call {
            kind,
            arg: index,
            data_type: window.schema.field(input_len + j).data_type().clone(),
            description: expr.to_string(),
        });
    }
    if let Err(reason) = check_rowwise(&window.input) {
        let first = window.window_expr.first().cloned().unwrap_or(lit("window"));
        return Err(refuse(&first, reason));
    }

    let aliased: Vec<Expr> = args
        .iter()
        .enumerate()
        .map(|(i, a)| a.clone().alias(format!("__sluice_arg_{i}")))
        .collect();
    let projection =
        Projection::try_new(aliased, Arc::clone(&window.input)).map_err(SqlError::from_planning)?;
    let pass1 = plan::physical(ctx, &LogicalPlan::Projection(projection))?;
    let schema = pass1.template.schema();

    let mut arg_states: Vec<Arg> = schema
        .fields()
        .iter()
        .map(|f| Arg {
            numeric: Numeric::of(f.data_type()),
            needs: Needs::default(),
        })
        .collect();
    if arg_states.len() != args.len() {
        return Err(SqlError::GlobalPass {
            detail: format!(
                "pass 1 has {} columns for {} arguments (a bug; please report the query)",
                arg_states.len(),
                args.len()
            ),
        });
    }
    for (call, expr) in calls.iter().zip(&window.window_expr) {
        let arg = &mut arg_states[call.arg];
        let summed = !matches!(call.kind, Kind::Count | Kind::Min | Kind::Max);
        if summed && arg.numeric == Numeric::Other {
            return Err(refuse(
                expr,
                format!(
                    "its argument is of type {}; whole-input SUM, AVG, STDDEV and VAR are \
                     computed exactly for integer and floating-point arguments only (CAST \
                     it to DOUBLE)",
                    schema.field(call.arg).data_type()
                ),
            ));
        }
        arg.needs.add(call.kind);
    }
    Ok(Site {
        window: window.clone(),
        pass1,
        args: arg_states,
        calls,
    })
}

/// The aggregate and its one argument, or why this window is not a whole-input aggregate.
fn check_call(expr: &Expr, function: &WindowFunction) -> Result<(Kind, Expr), SqlError> {
    let WindowFunctionDefinition::AggregateUDF(udf) = &function.fun else {
        return Err(refuse(
            expr,
            format!(
                "{} is a ranking or offset function, which depends on the order of the whole \
                 input; only AVG, SUM, COUNT, MIN, MAX, STDDEV*, VAR* OVER () are computed \
                 over the whole input",
                function.fun
            ),
        ));
    };
    let Some(kind) = Kind::from_name(udf.name()) else {
        return Err(refuse(
            expr,
            format!(
                "{} has no exact whole-input merge here; only AVG, SUM, COUNT, MIN, MAX, \
                 STDDEV, STDDEV_SAMP, STDDEV_POP, VAR, VAR_SAMP, VAR_POP OVER () are supported",
                udf.name()
            ),
        ));
    };
    let params = &function.params;
    if !params.partition_by.is_empty() {
        return Err(refuse(
            expr,
            "PARTITION BY computes one value per group of the whole input, which needs every \
             group's rows at once; only OVER () (the whole input) is supported",
        ));
    }
    if !params.order_by.is_empty() {
        return Err(refuse(
            expr,
            "ORDER BY inside OVER makes a running aggregate over the whole input's order; \
             only OVER () (the whole input) is supported",
        ));
    }
    let frame = &params.window_frame;
    let unbounded = |b: &WindowFrameBound| match b {
        WindowFrameBound::Preceding(v) | WindowFrameBound::Following(v) => v.is_null(),
        WindowFrameBound::CurrentRow => false,
    };
    let whole = matches!(frame.start_bound, WindowFrameBound::Preceding(_))
        && matches!(frame.end_bound, WindowFrameBound::Following(_))
        && unbounded(&frame.start_bound)
        && unbounded(&frame.end_bound);
    if !whole {
        return Err(refuse(
            expr,
            format!(
                "its frame ({frame}) is a sliding window over the whole input's rows; only \
                 OVER () (the whole input) is supported"
            ),
        ));
    }
    if params.filter.is_some() {
        return Err(refuse(
            expr,
            "FILTER (WHERE ...) is not supported over the whole input; use CASE WHEN ... \
             THEN x END as the argument",
        ));
    }
    if params.distinct {
        return Err(refuse(
            expr,
            "DISTINCT needs every distinct value of the whole input at once",
        ));
    }
    let [arg] = params.args.as_slice() else {
        return Err(refuse(expr, "only one-argument aggregates are supported"));
    };
    if has_subquery(arg) {
        return Err(refuse(
            expr,
            "its argument holds a subquery, which runs per chunk",
        ));
    }
    Ok((kind, arg.clone()))
}

/// Whether the rows of `plan` are a row-by-row function of the input's rows (projections,
/// filters, aliases, UNION ALL of such), so the whole input's rows are the union of every
/// chunk's; otherwise why not.
fn check_rowwise(plan: &LogicalPlan) -> Result<(), String> {
    let mut problem: Option<String> = None;
    let walk = plan.apply(|node| {
        let bad = match node {
            LogicalPlan::Projection(p) => p
                .expr
                .iter()
                .any(has_subquery)
                .then(|| "a subquery in the SELECT list it reads from".to_string()),
            LogicalPlan::Filter(f) => has_subquery(&f.predicate)
                .then(|| "a subquery in the WHERE clause of the rows it reads".to_string()),
            LogicalPlan::SubqueryAlias(_) | LogicalPlan::Union(_) => None,
            LogicalPlan::Sort(s) if s.fetch.is_none() => None,
            LogicalPlan::TableScan(scan) if scan.table_name.table() == plan::TABLE_NAME => None,
            LogicalPlan::Window(_) => Some(
                "its rows come from another window; nested windows need more than two passes"
                    .to_string(),
            ),
            LogicalPlan::Aggregate(_) => Some(
                "its rows come from GROUP BY or an aggregate, which runs per chunk".to_string(),
            ),
            LogicalPlan::Join(_) => {
                Some("its rows come from a join, which runs per chunk".to_string())
            }
            LogicalPlan::Limit(_) | LogicalPlan::Sort(_) => {
                Some("its rows come from LIMIT, which runs per chunk".to_string())
            }
            LogicalPlan::Distinct(_) => {
                Some("its rows come from DISTINCT, which runs per chunk".to_string())
            }
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                Some("its rows do not come from the input table `chunk`".to_string())
            }
            other => Some(format!(
                "its rows come from {}, which is not a row-by-row function of the input",
                other.display()
            )),
        };
        if bad.is_some() {
            problem = bad;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(e) = walk {
        return Err(e.to_string());
    }
    match problem {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}
