//! The checking context shared by every connector and transform while a spec is validated,
//! and the DataFusion-backed helpers that type-check SQL expressions and queries.
//!
//! Components never build diagnostics by hand from raw errors: they call [`Checker`] with the
//! JSON pointer of the value at fault, and the checker finds the line and column. DataFusion
//! errors are translated here into the stable codes of [`crate::diagnostics::Code`], with the
//! offending identifier located inside the expression text when it can be found.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::{DFSchema, DataFusionError, SchemaError};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::loader::SourceMap;
use crate::diagnostics::{Code, Diagnostic, closest};

/// Aggregate functions that `window_aggregate` computes.
pub const WINDOW_AGGREGATES: &[&str] = &["count", "sum", "min", "max", "avg"];

/// The schema of a stream between two operators, and which column carries event time.
#[derive(Debug, Clone)]
pub struct StreamSchema {
    /// Arrow schema of the rows.
    pub schema: SchemaRef,
    /// The timestamp column that watermarks follow, if the stream has event time.
    pub event_time: Option<String>,
}

impl StreamSchema {
    /// The stream with only `columns` (those it has, in its own order); event time is kept if
    /// its column is.
    pub fn project(&self, columns: &[String]) -> StreamSchema {
        let fields: Vec<_> = self.schema.fields().iter().filter(|f| columns.contains(f.name())).cloned().collect();
        StreamSchema {
            schema: std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            event_time: self.event_time.clone().filter(|c| columns.contains(c)),
        }
    }

    /// Names of all columns.
    pub fn column_names(&self) -> Vec<&str> {
        self.schema.fields().iter().map(|f| f.name().as_str()).collect()
    }
}

/// Collects located diagnostics while one spec file is checked.
pub struct Checker<'a> {
    file: &'a Path,
    map: &'a SourceMap,
    diagnostics: Vec<Diagnostic>,
    ctx: Option<SessionContext>,
}

impl<'a> Checker<'a> {
    /// A checker for `file`, whose text is described by `map`.
    pub fn new(file: &'a Path, map: &'a SourceMap) -> Self {
        Checker { file, map, diagnostics: Vec::new(), ctx: None }
    }

    /// Reports a problem with the value at `pointer`.
    pub fn error(&mut self, code: Code, pointer: &str, message: impl Into<String>) -> &mut Diagnostic {
        let span = self.map.value_span(pointer);
        self.push(Diagnostic::new(code, message).at(self.file, span), pointer)
    }

    /// Reports a problem with the member at `pointer`, pointing at its key.
    pub fn error_at_key(&mut self, code: Code, pointer: &str, message: impl Into<String>) -> &mut Diagnostic {
        let span = self.map.key_span(pointer);
        self.push(Diagnostic::new(code, message).at(self.file, span), pointer)
    }

    /// Reports a problem with `len` bytes at `offset` inside the string value at `pointer`.
    pub fn error_within(
        &mut self,
        code: Code,
        pointer: &str,
        offset: usize,
        len: usize,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let span = self.map.span_within(pointer, offset, len);
        self.push(Diagnostic::new(code, message).at(self.file, span), pointer)
    }

    fn push(&mut self, mut d: Diagnostic, pointer: &str) -> &mut Diagnostic {
        d.pointer = Some(pointer.to_string());
        self.diagnostics.push(d);
        self.diagnostics.last_mut().expect("just pushed")
    }

    /// The line where the member at `pointer` is defined.
    pub fn line_of(&self, pointer: &str) -> usize {
        self.map.key_span(pointer).line
    }

    /// Whether any error has been reported so far.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics collected.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    fn ctx(&mut self) -> &SessionContext {
        self.ctx.get_or_insert_with(|| {
            let mut config = SessionConfig::new();
            let options = config.options_mut();
            // Column names in specs are case-sensitive, as declared.
            options.sql_parser.enable_ident_normalization = false;
            options.sql_parser.collect_spans = true;
            SessionContext::new_with_config(config)
        })
    }

    /// Plans a SQL expression over `input` (whose columns may also be qualified by
    /// `input_name`), type-checks it and returns it with its type. Problems are reported at
    /// `pointer`, the string holding `sql`.
    pub fn expression(
        &mut self,
        pointer: &str,
        sql: &str,
        input_name: &str,
        input: &StreamSchema,
    ) -> Option<(Expr, DataType)> {
        self.size_ok(pointer, sql, "expression")?;
        let df_schema = match DFSchema::try_from_qualified_schema(input_name, &input.schema) {
            Ok(s) => s,
            Err(e) => {
                self.error(Code::TypeMismatch, pointer, clean(&e));
                return None;
            }
        };
        let result = self.ctx().parse_sql_expr(sql, &df_schema).and_then(|expr| {
            let physical = self.ctx().create_physical_expr(expr.clone(), &df_schema)?;
            let ty = physical.data_type(&input.schema)?;
            Ok((expr, ty))
        });
        match result {
            Ok((expr, ty)) => {
                if contains_aggregate(&expr) {
                    self.error(
                        Code::UnsupportedSql,
                        pointer,
                        format!("`{sql}` is an aggregate, which this transform cannot compute"),
                    )
                    .help = Some("aggregate over windows with a `window_aggregate` transform".into());
                    return None;
                }
                Some((expr, ty))
            }
            Err(e) => {
                self.sql_error(pointer, sql, &e, &input.column_names());
                None
            }
        }
    }

    /// Type-checks an aggregate expression such as `sum(amount)` over `input`, returning its
    /// result type.
    pub fn aggregate(&mut self, pointer: &str, sql: &str, input_name: &str, input: &StreamSchema) -> Option<DataType> {
        self.size_ok(pointer, sql, "aggregate")?;
        let df_schema = DFSchema::try_from_qualified_schema(input_name, &input.schema).ok()?;
        let expr = match self.ctx().parse_sql_expr(sql, &df_schema) {
            Ok(e) => e.unalias_nested().data,
            Err(e) => {
                self.sql_error(pointer, sql, &e, &input.column_names());
                return None;
            }
        };
        const HELP: &str = "write one aggregate such as `count(*)`, `sum(amount)`, `avg(amount)`, `min(ts)`, `max(price)` or `count(DISTINCT id)`";
        let Expr::AggregateFunction(af) = &expr else {
            self.error(Code::InvalidAggregate, pointer, format!("`{sql}` is not an aggregate function call")).help =
                Some(HELP.into());
            return None;
        };
        let name = af.func.name().to_lowercase();
        if !WINDOW_AGGREGATES.contains(&name.as_str()) {
            self.error(Code::InvalidAggregate, pointer, format!("`{name}` is not supported in windows")).help =
                Some(format!("supported: {}", WINDOW_AGGREGATES.join(", ")));
            return None;
        }
        if af.params.distinct && name != "count" {
            self.error(Code::InvalidAggregate, pointer, format!("DISTINCT is only supported with count, not {name}"));
            return None;
        }
        if af.params.filter.is_some() || !af.params.order_by.is_empty() || af.params.args.len() > 1 {
            self.error(
                Code::InvalidAggregate,
                pointer,
                "window aggregates take one argument, without FILTER or ORDER BY",
            )
            .help = Some(HELP.into());
            return None;
        }
        // Plan a one-row aggregate over an empty table to run DataFusion's type coercion.
        let plan = datafusion::logical_expr::LogicalPlanBuilder::empty(false)
            .build()
            .and_then(|_| {
                let table = Arc::new(MemTable::try_new(input.schema.clone(), vec![vec![]])?);
                let source = datafusion::datasource::provider_as_source(table);
                datafusion::logical_expr::LogicalPlanBuilder::scan(input_name, source, None)?
                    .aggregate(Vec::<Expr>::new(), vec![expr.alias("agg")])?
                    .build()
            })
            .and_then(|plan| self.ctx().state().optimize(&plan));
        match plan {
            Ok(plan) => match plan.schema().field_with_unqualified_name("agg") {
                Ok(f) => Some(f.data_type().clone()),
                Err(e) => {
                    self.error(Code::InvalidAggregate, pointer, clean(&e));
                    None
                }
            },
            Err(e) => {
                self.sql_error(pointer, sql, &e, &input.column_names());
                None
            }
        }
    }

    /// Plans a SQL query over the stream `input_name`, checks that it is stateless and
    /// returns its output schema.
    pub fn query(&mut self, pointer: &str, sql: &str, input_name: &str, input: &StreamSchema) -> Option<SchemaRef> {
        self.size_ok(pointer, sql, "query")?;
        let table = match MemTable::try_new(input.schema.clone(), vec![vec![]]) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                self.error(Code::TypeMismatch, pointer, clean(&e));
                return None;
            }
        };
        let ctx = self.ctx().clone();
        let _ = ctx.deregister_table(input_name);
        if let Err(e) = ctx.register_table(input_name, table) {
            self.error(Code::InvalidName, pointer, clean(&e));
            return None;
        }
        let state = ctx.state();
        let planned = futures::executor::block_on(state.create_logical_plan(sql));
        let _ = ctx.deregister_table(input_name);
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                self.sql_error(pointer, sql, &e, &input.column_names());
                if let Some(name) = missing_table(&e) {
                    let last = self.diagnostics.last_mut().expect("sql_error pushed");
                    last.code = Code::UnsupportedSql;
                    last.message = format!("the query reads `{name}`, but this transform's input is `{input_name}`");
                    last.help = Some(format!("write `FROM {input_name}`, or change `input`"));
                }
                return None;
            }
        };
        if let Some((what, help)) = unsupported_node(&plan, input_name) {
            self.error(Code::UnsupportedSql, pointer, format!("a `sql` transform cannot run {what}")).help = Some(help);
            return None;
        }
        let optimized = match self.ctx().state().optimize(&plan) {
            Ok(p) => p,
            Err(e) => {
                self.sql_error(pointer, sql, &e, &input.column_names());
                return None;
            }
        };
        // Compile it as `run` will, so that what validates is what runs.
        let compiled = crate::runtime::expr::Compiler::with_context(self.ctx().clone()).plan(&optimized, input_name);
        if let Err(e) = compiled {
            self.error(Code::UnsupportedSql, pointer, format!("a `sql` transform cannot run this query: {e}")).help =
                Some(STATELESS_HELP.into());
            return None;
        }
        Some(Arc::new(optimized.schema().as_arrow().clone()))
    }

    /// Reports `sql` when it is too large to plan safely.
    fn size_ok(&mut self, pointer: &str, sql: &str, what: &str) -> Option<()> {
        let Err(e) = check_sql_size(sql) else { return Some(()) };
        self.error_within(Code::SqlTooLarge, pointer, e.offset, e.len, format!("the {what} {}", e.message)).help =
            Some("split it: compute parts in a `select` first, or use `IN (...)` for long lists of `OR`".into());
        None
    }

    /// Translates a DataFusion error about `sql` (the string at `pointer`) into a diagnostic.
    fn sql_error(&mut self, pointer: &str, sql: &str, error: &DataFusionError, columns: &[&str]) {
        let located = error.diagnostic().and_then(|d| d.span).and_then(|s| {
            offset_of(sql, s.start.line as usize, s.start.column as usize).map(|start| {
                let end = offset_of(sql, s.end.line as usize, s.end.column as usize).unwrap_or(start);
                (start, end.saturating_sub(start))
            })
        });
        let root = error.find_root();
        if let DataFusionError::SchemaError(schema_error, _) = root
            && let SchemaError::FieldNotFound { field, .. } = schema_error.as_ref()
        {
            let name = field.name().to_string();
            let (offset, len) = located.or_else(|| find_ident(sql, &name).map(|o| (o, name.len()))).unwrap_or((0, 0));
            let d = self.error_within(Code::UnknownColumn, pointer, offset, len, format!("unknown column `{name}`"));
            d.label = Some("not a column of the input".into());
            d.help = Some(match closest(&name, columns.iter().copied()) {
                Some(c) => format!("did you mean `{c}`? the input has columns: {}", columns.join(", ")),
                None => format!("the input has columns: {}", columns.join(", ")),
            });
            return;
        }
        match root {
            DataFusionError::SQL(parse, _) => {
                let text = parse.to_string();
                let (msg, offset) = split_sql_location(&text, sql);
                let msg = msg.trim_start_matches("sql parser error: ").to_string();
                self.error_within(Code::SqlSyntax, pointer, offset.unwrap_or(0), 1, format!("SQL syntax error: {msg}"));
            }
            other => {
                let msg = clean(other);
                let code = if msg.contains("Invalid function") || msg.contains("function") && msg.contains("not found")
                {
                    Code::UnknownFunction
                } else {
                    Code::TypeMismatch
                };
                let (offset, len) = located.unwrap_or((0, 0));
                let d = self.error_within(code, pointer, offset, len, msg);
                if code == Code::UnknownFunction {
                    d.message = d.message.replace("Invalid function", "unknown function");
                    let full = other.to_string();
                    if let Some(at) = full.find("Did you mean") {
                        d.help = Some(full[at..].trim().trim_end_matches('.').replace("Did you mean", "did you mean"));
                    }
                }
            }
        }
    }
}

/// The most operators (`+`, `=`, `AND`, `OR`, `NOT`, `LIKE`, …) one expression or query may
/// have. Longer chains make DataFusion's planning slow (its type checks are quadratic in the
/// length of a chain) and its recursion deep enough to overflow the stack.
pub const MAX_SQL_OPERATORS: usize = 500;

/// The deepest nesting of parentheses, function calls and `CASE` one expression may have.
pub const MAX_SQL_NESTING: usize = 32;

/// Why an expression or query is too large to plan: the byte offset and length in the SQL of
/// the token past the limit, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTooLarge {
    /// Byte offset of the token past the limit.
    pub offset: usize,
    /// Byte length of that token.
    pub len: usize,
    /// What limit it passes, as a predicate: "has more than 500 operators".
    pub message: String,
}

/// Checks `sql` against [`MAX_SQL_OPERATORS`] and [`MAX_SQL_NESTING`] by its tokens alone,
/// before anything recursive (parser, planner) sees it. Text that does not tokenize passes:
/// the parser reports it.
pub fn check_sql_size(sql: &str) -> Result<(), SqlTooLarge> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else { return Ok(()) };
    let (mut operators, mut depth) = (0usize, 0usize);
    for t in &tokens {
        let (opens, operator) = match &t.token {
            Token::LParen | Token::LBracket => (true, false),
            Token::RParen | Token::RBracket => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Token::Word(w) => match w.keyword {
                Keyword::CASE => (true, false),
                Keyword::END => {
                    depth = depth.saturating_sub(1);
                    continue;
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::XOR => (false, true),
                _ => continue,
            },
            Token::Whitespace(_)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::EOF
            | Token::Number(..)
            | Token::Char(_)
            | Token::Placeholder(_) => continue,
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_) => continue,
            _ => (false, true),
        };
        let located = |message: String| {
            let offset = offset_of(sql, t.span.start.line as usize, t.span.start.column as usize).unwrap_or(0);
            let end = offset_of(sql, t.span.end.line as usize, t.span.end.column as usize).unwrap_or(offset);
            SqlTooLarge { offset, len: end.saturating_sub(offset).max(1), message }
        };
        if opens {
            depth += 1;
            if depth > MAX_SQL_NESTING {
                return Err(located(format!(
                    "is nested more than {MAX_SQL_NESTING} levels deep (parentheses, function calls, CASE)"
                )));
            }
        }
        if operator {
            operators += 1;
            if operators > MAX_SQL_OPERATORS {
                return Err(located(format!("has more than {MAX_SQL_OPERATORS} operators")));
            }
        }
    }
    Ok(())
}

/// The error text without DataFusion's category prefixes and backtrace.
pub fn clean(e: &DataFusionError) -> String {
    let text = e.find_root().to_string();
    let mut s = text.as_str();
    for prefix in ["Error during planning: ", "Schema error: ", "Optimizer rule ", "Arrow error: ", "Execution error: "]
    {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
        }
    }
    if let Some((head, _)) = s.split_once("\n") {
        s = head;
    }
    let s = s.trim_end_matches('.');
    humanize_types(&s.replace("Cannot infer common argument type for comparison operation", "cannot compare"))
}

/// Arrow type names in messages replaced by the spec's (`Float64` → `double`).
fn humanize_types(text: &str) -> String {
    const NAMES: [(&str, &str); 12] = [
        ("Timestamp(Millisecond, Some(\"UTC\"))", "timestamp"),
        ("Timestamp(ms, \"UTC\")", "timestamp"),
        ("Timestamp(Millisecond, None)", "timestamp"),
        ("Utf8View", "string"),
        ("LargeUtf8", "string"),
        ("Utf8", "string"),
        ("Float64", "double"),
        ("Float32", "float"),
        ("Int64", "bigint"),
        ("Int32", "int"),
        ("Boolean", "boolean"),
        ("Date32", "date"),
    ];
    NAMES.iter().fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

fn missing_table(e: &DataFusionError) -> Option<String> {
    let text = e.find_root().to_string();
    let start = text.find("table '")? + "table '".len();
    let end = text[start..].find('\'')?;
    Some(text[start..start + end].trim_start_matches("datafusion.public.").to_string())
}

/// Byte offset of a 1-based line and column (in characters) in `text`.
fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    if line == 0 || column == 0 {
        return None;
    }
    let line_start = if line == 1 { 0 } else { text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)? };
    let rest = &text[line_start..];
    let off = rest.char_indices().nth(column - 1).map(|(i, _)| i).unwrap_or(rest.len());
    Some(line_start + off)
}

/// Splits sqlparser's " at Line: L, Column: C" suffix off and turns it into an offset.
fn split_sql_location<'t>(text: &'t str, sql: &str) -> (&'t str, Option<usize>) {
    let Some(at) = text.rfind(" at Line: ") else { return (text, None) };
    let tail = &text[at + " at Line: ".len()..];
    let mut parts = tail.split(", Column: ");
    let line = parts.next().and_then(|l| l.trim().parse().ok());
    let col = parts.next().and_then(|c| c.trim().parse().ok());
    let off = match (line, col) {
        (Some(l), Some(c)) => offset_of(sql, l, c),
        _ => None,
    };
    (&text[..at], off)
}

/// Offset of `ident` as a whole word in `sql`.
fn find_ident(sql: &str, ident: &str) -> Option<usize> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    sql.match_indices(ident).map(|(i, _)| i).find(|&i| {
        let before = sql[..i].chars().next_back().is_none_or(|c| !is_word(c));
        let after = sql[i + ident.len()..].chars().next().is_none_or(|c| !is_word(c));
        before && after
    })
}

fn contains_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    let _ = expr.apply(|e| {
        if matches!(e, Expr::AggregateFunction(_) | Expr::WindowFunction(_)) {
            found = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

use datafusion::common::tree_node::TreeNode;

const STATELESS_HELP: &str = "a `sql` transform runs a stateless SELECT ... FROM its input: projections and WHERE only";

/// The first construct in `plan` that a `sql` transform does not run, with help: anything but
/// projections, filters and aliases over one scan of the input `input_name`, or a subquery.
fn unsupported_node(plan: &LogicalPlan, input_name: &str) -> Option<(String, String)> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = None;
    let mut scans = 0;
    let _ = plan.apply(|node| {
        let bad: Option<(String, &str)> = match node {
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => None,
            LogicalPlan::TableScan(scan) if scan.table_name.table() == input_name => {
                scans += 1;
                (scans > 1).then(|| (format!("a query reading `{input_name}` twice"), STATELESS_HELP))
            }
            LogicalPlan::TableScan(scan) => Some((
                format!("a query reading `{}`: it reads only its input `{input_name}`", scan.table_name),
                "write `FROM` followed by the input's name; table functions such as generate_series are not supported",
            )),
            LogicalPlan::Aggregate(_) => {
                Some(("GROUP BY / aggregate".into(), "aggregate over time windows with a `window_aggregate` transform"))
            }
            LogicalPlan::Union(_) => Some(("UNION".into(), "merge streams with a `union` transform")),
            LogicalPlan::Join(_) => Some(("JOIN".into(), STATELESS_HELP)),
            LogicalPlan::Sort(_) => Some(("ORDER BY".into(), STATELESS_HELP)),
            LogicalPlan::Limit(_) => Some(("LIMIT".into(), STATELESS_HELP)),
            LogicalPlan::Window(_) => Some(("window functions (OVER)".into(), STATELESS_HELP)),
            LogicalPlan::Distinct(_) => Some(("DISTINCT".into(), STATELESS_HELP)),
            LogicalPlan::RecursiveQuery(_) => Some(("recursive queries".into(), STATELESS_HELP)),
            LogicalPlan::Values(_) => {
                Some(("VALUES".into(), "a `sql` transform reads rows from its input, not VALUES"))
            }
            LogicalPlan::EmptyRelation(_) => Some(("a query without FROM".into(), STATELESS_HELP)),
            LogicalPlan::Subquery(_) => Some(("subqueries".into(), STATELESS_HELP)),
            LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) | LogicalPlan::Statement(_) => {
                Some(("statements other than SELECT".into(), STATELESS_HELP))
            }
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_) => {
                Some(("EXPLAIN or DESCRIBE".into(), STATELESS_HELP))
            }
            other => Some((format!("`{}`", other.display()), STATELESS_HELP)),
        };
        let bad = bad.or_else(|| {
            let mut subquery = false;
            let _ = node.apply_expressions(|e| {
                e.apply(|e| {
                    subquery |= matches!(
                        e,
                        Expr::ScalarSubquery(_)
                            | Expr::InSubquery(_)
                            | Expr::Exists(_)
                            | Expr::SetComparison(_)
                            | Expr::OuterReferenceColumn(..)
                    );
                    Ok(if subquery { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
                })
            });
            subquery.then(|| ("subqueries (IN, EXISTS or scalar subqueries)".into(), STATELESS_HELP))
        });
        if let Some((what, help)) = bad {
            found = Some((what, help.to_string()));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if found.is_none() && scans == 0 {
        found = Some((format!("a query that does not read its input `{input_name}`"), STATELESS_HELP.to_string()));
    }
    found
}

/// An Arrow schema with the given fields appended, for operators that add columns.
pub fn with_fields(schema: &Schema, extra: Vec<arrow::datatypes::Field>) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(extra);
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(offset_of("abc\ndef", 2, 2), Some(5));
        assert_eq!(offset_of("abc", 1, 1), Some(0));
        assert_eq!(find_ident("amount > amount2 and x", "amount"), Some(0));
        assert_eq!(find_ident("xamount > amount", "amount"), Some(10));
        let (m, o) = split_sql_location("Expected: an expression, found: EOF at Line: 1, Column: 9", "amount >");
        assert_eq!(m, "Expected: an expression, found: EOF");
        assert_eq!(o, Some(8));
    }
}
