//! Conditions a source may use to skip data: comparisons of a column with a constant, taken
//! from the conditions of the transforms that read the source. A row for which such a
//! comparison is false is dropped downstream anyway, so a source may skip a block of rows
//! (a Parquet row group) whose statistics prove the comparison false for every row in it.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use serde::{Deserialize, Serialize};

/// A comparison operator, with the column on the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl CmpOp {
    fn of(op: Operator) -> Option<CmpOp> {
        Some(match op {
            Operator::Eq => CmpOp::Eq,
            Operator::Lt => CmpOp::Lt,
            Operator::LtEq => CmpOp::LtEq,
            Operator::Gt => CmpOp::Gt,
            Operator::GtEq => CmpOp::GtEq,
            _ => return None,
        })
    }

    /// The operator with its sides swapped (`5 < x` is `x > 5`).
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }
}

/// A constant compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Literal {
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text, compared by bytes (UTF-8 byte order is code point order).
    Text(String),
}

impl Literal {
    fn of(v: &ScalarValue) -> Option<Literal> {
        Some(match v {
            ScalarValue::Int8(Some(x)) => Literal::Int(i64::from(*x)),
            ScalarValue::Int16(Some(x)) => Literal::Int(i64::from(*x)),
            ScalarValue::Int32(Some(x)) => Literal::Int(i64::from(*x)),
            ScalarValue::Int64(Some(x)) => Literal::Int(*x),
            ScalarValue::UInt8(Some(x)) => Literal::Int(i64::from(*x)),
            ScalarValue::UInt16(Some(x)) => Literal::Int(i64::from(*x)),
            ScalarValue::UInt32(Some(x)) => Literal::Int(i64::from(*x)),
            ScalarValue::UInt64(Some(x)) => Literal::Int(i64::try_from(*x).ok()?),
            ScalarValue::Float32(Some(x)) if x.is_finite() => Literal::Float(f64::from(*x)),
            ScalarValue::Float64(Some(x)) if x.is_finite() => Literal::Float(*x),
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                Literal::Text(s.clone())
            }
            _ => return None,
        })
    }
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Int(x) => write!(f, "{x}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

/// `column op value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnBound {
    /// The column of the transform's input (the source's stream).
    pub column: String,
    /// How it compares.
    pub op: CmpOp,
    /// With what.
    pub value: Literal,
}

impl std::fmt::Display for ColumnBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.column, self.op.symbol(), self.value)
    }
}

impl ColumnBound {
    /// Whether no value in `[min, max]` satisfies the comparison, for integer statistics.
    pub fn excludes_ints(&self, min: i64, max: i64) -> bool {
        match &self.value {
            Literal::Int(v) => excludes(self.op, min, max, *v),
            // Beyond 2^53 an integer is not exactly a float: decide nothing there.
            Literal::Float(v) if min.unsigned_abs() <= EXACT && max.unsigned_abs() <= EXACT => {
                excludes(self.op, min as f64, max as f64, *v)
            }
            _ => false,
        }
    }

    /// Whether no value in `[min, max]` satisfies the comparison, for float statistics.
    pub fn excludes_floats(&self, min: f64, max: f64) -> bool {
        let v = match &self.value {
            Literal::Int(v) if v.unsigned_abs() <= EXACT => *v as f64,
            Literal::Float(v) => *v,
            _ => return false,
        };
        // NaN statistics prove nothing.
        !min.is_nan() && !max.is_nan() && excludes(self.op, min, max, v)
    }

    /// Whether no text in `[min, max]` (by bytes) satisfies the comparison.
    pub fn excludes_text(&self, min: &[u8], max: &[u8]) -> bool {
        let Literal::Text(v) = &self.value else { return false };
        let v = v.as_bytes();
        match self.op {
            CmpOp::Eq => v < min || v > max,
            CmpOp::Lt => min >= v,
            CmpOp::LtEq => min > v,
            CmpOp::Gt => max <= v,
            CmpOp::GtEq => max < v,
        }
    }
}

/// Integers up to this size are exact as floats.
const EXACT: u64 = 1 << 53;

/// Whether no value in `[min, max]` is `op v`.
fn excludes<T: PartialOrd>(op: CmpOp, min: T, max: T, v: T) -> bool {
    match op {
        CmpOp::Eq => v < min || v > max,
        CmpOp::Lt => min >= v,
        CmpOp::LtEq => min > v,
        CmpOp::Gt => max <= v,
        CmpOp::GtEq => max < v,
    }
}

/// The `column op constant` comparisons among the top-level AND terms of `condition` (other
/// terms are left out: each comparison returned holds for every row the condition keeps).
pub fn bounds(condition: &Expr) -> Vec<ColumnBound> {
    let mut out = Vec::new();
    collect(condition, &mut out);
    out
}

fn collect(e: &Expr, out: &mut Vec<ColumnBound>) {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return };
    if *op == Operator::And {
        collect(left, out);
        collect(right, out);
        return;
    }
    let Some(cmp) = CmpOp::of(*op) else { return };
    let bound = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) => Literal::of(v).map(|value| (c, cmp, value)),
        (Expr::Literal(v, _), Expr::Column(c)) => Literal::of(v).map(|value| (c, cmp.flipped(), value)),
        _ => None,
    };
    if let Some((c, op, value)) = bound {
        out.push(ColumnBound { column: c.name.clone(), op, value });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(op: CmpOp, value: Literal) -> ColumnBound {
        ColumnBound { column: "x".into(), op, value }
    }

    #[test]
    fn bounds_exclude_only_what_they_prove() {
        let gt = bound(CmpOp::Gt, Literal::Int(100));
        assert!(gt.excludes_ints(0, 100));
        assert!(!gt.excludes_ints(0, 101));
        let eq = bound(CmpOp::Eq, Literal::Int(5));
        assert!(eq.excludes_ints(6, 9) && eq.excludes_ints(0, 4) && !eq.excludes_ints(5, 5));
        let le = bound(CmpOp::LtEq, Literal::Float(1.5));
        assert!(le.excludes_floats(1.6, 3.0) && !le.excludes_floats(1.5, 3.0));
        assert!(!le.excludes_floats(f64::NAN, 3.0));
        let big = bound(CmpOp::Eq, Literal::Int(i64::MAX));
        assert!(big.excludes_ints(i64::MAX - 1, i64::MAX - 1), "integers compare exactly");
        let big = bound(CmpOp::Gt, Literal::Float(9.0e15));
        assert!(!big.excludes_ints(i64::MAX - 1, i64::MAX - 1) && !big.excludes_ints(0, 1 << 60));
        assert!(big.excludes_ints(0, 1 << 40));
        let t = bound(CmpOp::Lt, Literal::Text("m".into()));
        assert!(t.excludes_text(b"m", b"z") && !t.excludes_text(b"a", b"z"));
        assert!(!t.excludes_ints(0, 1), "text against numbers proves nothing");
    }

    #[test]
    fn only_top_level_and_terms_of_column_and_constant_are_taken() {
        let ctx = datafusion::prelude::SessionContext::new();
        let schema = datafusion::common::DFSchema::try_from(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("b", arrow::datatypes::DataType::Utf8, true),
        ]))
        .unwrap();
        let e =
            ctx.parse_sql_expr("a > 5 AND 10 >= a AND (b = 'x' OR a = 1) AND a + 1 < 3 AND b = 'y'", &schema).unwrap();
        let got: Vec<String> = bounds(&e).iter().map(|b| b.to_string()).collect();
        assert_eq!(got, vec!["a > 5", "a <= 10", "b = 'y'"]);
        let e = ctx.parse_sql_expr("a > 5 OR b = 'x'", &schema).unwrap();
        assert!(bounds(&e).is_empty());
    }
}
