//! SQL compiled once, evaluated per batch: expressions become DataFusion physical
//! expressions, and a stateless SELECT becomes a list of filter and projection steps.
//! Nothing here interprets rows one by one.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::OperatorError;

/// Compiles SQL for the runtime, with the same settings as validation.
pub struct Compiler {
    ctx: SessionContext,
}

impl Default for Compiler {
    fn default() -> Self {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.enable_ident_normalization = false;
        Compiler { ctx: SessionContext::new_with_config(config) }
    }
}

/// One step of a compiled stateless query.
enum Step {
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
    /// No rows, whatever the input (a condition the optimizer proved false).
    Empty(SchemaRef),
}

/// A stateless SELECT, ready to run on batches of its input.
pub struct Program {
    steps: Vec<Step>,
}

/// Refuses SQL too large to plan without deep recursion, as validation does.
fn size_ok(sql: &str) -> Result<(), OperatorError> {
    crate::spec::check::check_sql_size(sql).map_err(|e| OperatorError::new(format!("the SQL {}", e.message)))
}

impl Compiler {
    /// A compiler sharing `ctx` (validation compiles with its own session).
    pub fn with_context(ctx: SessionContext) -> Self {
        Compiler { ctx }
    }

    /// Parses a SQL expression against `schema`.
    pub fn parse(&self, sql: &str, schema: &DFSchema) -> Result<Expr, OperatorError> {
        size_ok(sql)?;
        Ok(self.ctx.parse_sql_expr(sql, schema)?)
    }

    /// Compiles a planned expression.
    pub fn physical(&self, expr: Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>, OperatorError> {
        Ok(self.ctx.create_physical_expr(expr, schema)?)
    }

    /// Compiles one expression over rows of `schema` (columns may be qualified by `input`).
    pub fn expr(&self, sql: &str, input: &str, schema: &SchemaRef) -> Result<Arc<dyn PhysicalExpr>, OperatorError> {
        let df = DFSchema::try_from_qualified_schema(input, schema)?;
        let expr = self.parse(sql, &df)?;
        Ok(self.ctx.create_physical_expr(expr, &df)?)
    }

    /// A program keeping rows where `condition` is true.
    pub fn filter(&self, condition: &str, input: &str, schema: &SchemaRef) -> Result<Program, OperatorError> {
        Ok(Program { steps: vec![Step::Filter(self.expr(condition, input, schema)?)] })
    }

    /// A program computing `columns` (name, expression) into rows of `output`.
    pub fn select(
        &self,
        columns: &[(String, String)],
        input: &str,
        schema: &SchemaRef,
        output: SchemaRef,
    ) -> Result<Program, OperatorError> {
        let exprs = columns.iter().map(|(_, sql)| self.expr(sql, input, schema)).collect::<Result<Vec<_>, _>>()?;
        Ok(Program { steps: vec![Step::Project(exprs, output)] })
    }

    /// Compiles a stateless SELECT reading the stream `input` of `schema`.
    pub fn query(&self, sql: &str, input: &str, schema: &SchemaRef) -> Result<Program, OperatorError> {
        size_ok(sql)?;
        let table = Arc::new(datafusion::datasource::MemTable::try_new(schema.clone(), vec![vec![]])?);
        self.ctx.register_table(input, table)?;
        let state = self.ctx.state();
        let plan = futures::executor::block_on(state.create_logical_plan(sql))?;
        let plan = state.optimize(&plan)?;
        self.plan(&plan, input)
    }

    /// The optimized plan of a stateless SELECT over `input`, or `None`.
    fn optimized(&self, sql: &str, input: &str, schema: &SchemaRef) -> Option<LogicalPlan> {
        size_ok(sql).ok()?;
        let table = Arc::new(datafusion::datasource::MemTable::try_new(schema.clone(), vec![vec![]]).ok()?);
        self.ctx.register_table(input, table).ok()?;
        let state = self.ctx.state();
        let plan = futures::executor::block_on(state.create_logical_plan(sql)).ok()?;
        state.optimize(&plan).ok()
    }

    /// The `column op constant` terms of the conditions a stateless SELECT applies to the rows
    /// of `input` as they are scanned; `None` when the query cannot be planned.
    pub fn query_keeps(
        &self,
        sql: &str,
        input: &str,
        schema: &SchemaRef,
    ) -> Option<Vec<crate::plan::predicate::ColumnBound>> {
        let plan = self.optimized(sql, input, schema)?;
        let mut bounds = Vec::new();
        let _ = plan.apply(|node| {
            match node {
                LogicalPlan::Filter(f) if matches!(f.input.as_ref(), LogicalPlan::TableScan(_)) => {
                    bounds.extend(crate::plan::predicate::bounds(&f.predicate));
                }
                LogicalPlan::TableScan(scan) => {
                    scan.filters.iter().for_each(|e| bounds.extend(crate::plan::predicate::bounds(e)));
                }
                _ => {}
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        Some(bounds)
    }

    /// The columns of `input` a stateless SELECT reads (in its projections and conditions),
    /// from its optimized plan; `None` when that cannot be told.
    pub fn query_reads(&self, sql: &str, input: &str, schema: &SchemaRef) -> Option<Vec<String>> {
        let plan = self.optimized(sql, input, schema)?;
        let mut scans = Vec::new();
        let _ = plan.apply(|node| {
            match node {
                LogicalPlan::TableScan(scan) => scans.push(scan.projection.clone()),
                LogicalPlan::EmptyRelation(_) => scans.push(Some(Vec::new())),
                _ => {}
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        // One scan (or none, for a query that reads nothing), with a projection.
        match scans.as_slice() {
            [Some(projection)] => Some(projection.iter().map(|&i| schema.field(i).name().clone()).collect()),
            _ => None,
        }
    }

    /// The columns of `input` that the expressions `sqls` read; `None` when one does not parse.
    pub fn expression_reads<'a>(
        &self,
        sqls: impl IntoIterator<Item = &'a str>,
        input: &str,
        schema: &SchemaRef,
    ) -> Option<Vec<String>> {
        let df = DFSchema::try_from_qualified_schema(input, schema).ok()?;
        let mut read = Vec::new();
        for sql in sqls {
            let expr = self.parse(sql, &df).ok()?;
            read.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
        }
        read.sort();
        read.dedup();
        Some(read)
    }

    /// Compiles an optimized plan over the stream `input`: projections, filters and aliases
    /// over one scan of `input`, or an empty relation; anything else is refused.
    pub fn plan(&self, plan: &LogicalPlan, input: &str) -> Result<Program, OperatorError> {
        let mut steps = Vec::new();
        self.steps(plan, input, &mut steps)?;
        Ok(Program { steps })
    }

    fn compile_all(&self, exprs: &[Expr], schema: &DFSchema) -> Result<Vec<Arc<dyn PhysicalExpr>>, OperatorError> {
        exprs.iter().map(|e| Ok(self.ctx.create_physical_expr(e.clone(), schema)?)).collect()
    }

    fn steps(&self, plan: &LogicalPlan, input: &str, steps: &mut Vec<Step>) -> Result<(), OperatorError> {
        match plan {
            LogicalPlan::TableScan(scan) if scan.table_name.table() != input || scan.fetch.is_some() => {
                Err(OperatorError::new(format!(
                    "a sql transform reads only its input `{input}`, not `{}`",
                    scan.table_name
                )))
            }
            LogicalPlan::EmptyRelation(e) if !e.produce_one_row => {
                steps.push(Step::Empty(Arc::new(e.schema.as_arrow().clone())));
                Ok(())
            }
            LogicalPlan::TableScan(scan) => {
                let source_schema =
                    DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema())?;
                if let Some(pred) = scan.filters.iter().cloned().reduce(|a, b| a.and(b)) {
                    steps.push(Step::Filter(self.ctx.create_physical_expr(pred, &source_schema)?));
                }
                if let Some(projection) = &scan.projection {
                    let exprs: Vec<Expr> = projection
                        .iter()
                        .map(|&i| {
                            let (q, f) = source_schema.qualified_field(i);
                            Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()))
                        })
                        .collect();
                    let compiled = self.compile_all(&exprs, &source_schema)?;
                    steps.push(Step::Project(compiled, Arc::new(scan.projected_schema.as_arrow().clone())));
                }
                Ok(())
            }
            LogicalPlan::Filter(f) => {
                self.steps(&f.input, input, steps)?;
                steps.push(Step::Filter(self.ctx.create_physical_expr(f.predicate.clone(), f.input.schema())?));
                Ok(())
            }
            LogicalPlan::Projection(p) => {
                self.steps(&p.input, input, steps)?;
                let compiled = self.compile_all(&p.expr, p.input.schema())?;
                steps.push(Step::Project(compiled, Arc::new(p.schema.as_arrow().clone())));
                Ok(())
            }
            LogicalPlan::SubqueryAlias(a) => self.steps(&a.input, input, steps),
            other => Err(OperatorError::new(format!("a sql transform cannot run `{}`", other.display()))),
        }
    }
}

impl Program {
    /// Runs the program on one batch.
    pub fn run(&self, mut batch: RecordBatch) -> Result<RecordBatch, OperatorError> {
        for step in &self.steps {
            batch = match step {
                Step::Filter(pred) => {
                    let mask = pred.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| OperatorError::new("filter condition is not boolean"))?;
                    if mask.true_count() == batch.num_rows() && mask.null_count() == 0 {
                        batch
                    } else {
                        filter_record_batch(&batch, mask)?
                    }
                }
                Step::Project(exprs, schema) => {
                    let n = batch.num_rows();
                    let columns = exprs.iter().map(|e| Ok(e.evaluate(&batch)?.into_array(n)?)).collect::<Result<
                        Vec<_>,
                        OperatorError,
                    >>(
                    )?;
                    let options = RecordBatchOptions::new().with_row_count(Some(n));
                    RecordBatch::try_new_with_options(schema.clone(), columns, &options)?
                }
                Step::Empty(schema) => RecordBatch::new_empty(schema.clone()),
            };
        }
        Ok(batch)
    }
}
