//! The row groups of a Parquet file that a source reads: those whose statistics do not prove
//! that every consumer drops all their rows (see [`crate::plan::Operator::skips`]). Row
//! numbers in messages and the event time that drives the watermark advance as if every group
//! had been read: a skipped group's event times count, by its statistics, once reading passes it.

use arrow::datatypes::{DataType, Schema, TimeUnit};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;
use parquet::schema::types::SchemaDescriptor;

use crate::plan::predicate::ColumnBound;

/// One row group: its rows, whether it is read, and (for a skipped one) its latest event time.
#[derive(Debug, Clone)]
struct Group {
    rows: u64,
    kept: bool,
    max_event: Option<i64>,
}

/// The row groups of one file, in file order.
#[derive(Debug, Clone, Default)]
pub struct RowGroups {
    groups: Vec<Group>,
}

/// What deciding needs to know about the file and the stream.
pub struct Context<'a> {
    /// The file's metadata.
    pub meta: &'a ParquetMetaData,
    /// The file's Arrow schema.
    pub file_schema: &'a Schema,
    /// The file's Parquet schema (for leaf column indices).
    pub parquet_schema: &'a SchemaDescriptor,
    /// The stream's declared schema.
    pub declared: &'a Schema,
    /// Per consumer, comparisons its rows meet.
    pub skips: &'a [Vec<ColumnBound>],
    /// The event-time column, if the source has one.
    pub event_time: Option<&'a str>,
}

impl RowGroups {
    /// Decides which row groups to read.
    pub fn plan(cx: &Context<'_>) -> RowGroups {
        let groups = cx
            .meta
            .row_groups()
            .iter()
            .map(|rg| {
                let rows = u64::try_from(rg.num_rows()).unwrap_or(0);
                // Every consumer must have a comparison that the statistics prove false.
                let skip = !cx.skips.is_empty() && cx.skips.iter().all(|c| c.iter().any(|b| excludes(cx, rg, b)));
                // A skipped group still moves event time: it needs that column's statistics.
                let max_event = match cx.event_time {
                    Some(column) if skip => match latest_time(cx, rg, column) {
                        Some(t) => Some(t),
                        None => return Group { rows, kept: true, max_event: None },
                    },
                    _ => None,
                };
                Group { rows, kept: !skip, max_event }
            })
            .collect();
        RowGroups { groups }
    }

    /// Indices of the groups to read.
    pub fn kept(&self) -> Vec<usize> {
        (0..self.groups.len()).filter(|&i| self.groups[i].kept).collect()
    }

    /// Rows in the groups read.
    pub fn kept_rows(&self) -> u64 {
        self.groups.iter().filter(|g| g.kept).map(|g| g.rows).sum()
    }

    /// Groups skipped.
    pub fn skipped(&self) -> usize {
        self.groups.iter().filter(|g| !g.kept).count()
    }

    /// The file's row number (from 0) of the `n`th row read.
    pub fn file_row(&self, n: u64) -> u64 {
        let (mut before, mut kept) = (0, 0);
        for g in &self.groups {
            if g.kept {
                if n < kept + g.rows {
                    return before + (n - kept);
                }
                kept += g.rows;
            }
            before += g.rows;
        }
        before + (n - kept)
    }

    /// How many of the rows read come before the file's row `file_row` (the inverse of
    /// [`RowGroups::file_row`]): where a restored file resumes under this plan.
    pub fn read_before(&self, file_row: u64) -> u64 {
        let (mut before, mut kept) = (0, 0);
        for g in &self.groups {
            if before >= file_row {
                break;
            }
            if g.kept {
                kept += g.rows.min(file_row - before);
            }
            before += g.rows;
        }
        kept
    }

    /// The latest event time of the skipped groups that reading has passed once `n` rows are
    /// read (a skipped group is passed when every group before it has been read whole).
    pub fn passed_event_time(&self, n: u64) -> Option<i64> {
        let mut kept = 0;
        let mut latest = None;
        for g in &self.groups {
            if g.kept {
                kept += g.rows;
            } else if kept <= n {
                latest = latest.max(g.max_event);
            } else {
                break;
            }
        }
        latest
    }
}

/// The statistics of root column `column` in group `rg`, if the file has them.
fn stats<'a>(cx: &Context<'_>, rg: &'a RowGroupMetaData, column: &str) -> Option<&'a Statistics> {
    let leaf = cx.parquet_schema.columns().iter().position(|c| c.path().parts() == [column.to_string()])?;
    rg.column(leaf).statistics()
}

/// Whether the statistics of `rg` prove `b` false for every row in it.
fn excludes(cx: &Context<'_>, rg: &RowGroupMetaData, b: &ColumnBound) -> bool {
    let (Ok(file), Ok(declared)) = (cx.file_schema.field_with_name(&b.column), cx.declared.field_with_name(&b.column))
    else {
        return false;
    };
    let numeric = |t: &DataType| t.is_integer() || t.is_floating();
    let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    // The value the consumer compares is the file's, converted exactly to the declared type:
    // statistics decide only when both are numbers or both are text.
    let (f, d) = (file.data_type(), declared.data_type());
    if !(numeric(f) && numeric(d) || text(f) && text(d)) {
        return false;
    }
    match stats(cx, rg, &b.column) {
        Some(Statistics::Int32(s)) if f.is_signed_integer() => match (s.min_opt(), s.max_opt()) {
            (Some(&lo), Some(&hi)) => b.excludes_ints(i64::from(lo), i64::from(hi)),
            _ => false,
        },
        Some(Statistics::Int64(s)) if f.is_signed_integer() => match (s.min_opt(), s.max_opt()) {
            (Some(&lo), Some(&hi)) => b.excludes_ints(lo, hi),
            _ => false,
        },
        Some(Statistics::Float(s)) => match (s.min_opt(), s.max_opt()) {
            (Some(&lo), Some(&hi)) => b.excludes_floats(f64::from(lo), f64::from(hi)),
            _ => false,
        },
        Some(Statistics::Double(s)) => match (s.min_opt(), s.max_opt()) {
            (Some(&lo), Some(&hi)) => b.excludes_floats(lo, hi),
            _ => false,
        },
        // Truncated text statistics bound nothing exactly.
        Some(Statistics::ByteArray(s)) if s.min_is_exact() && s.max_is_exact() => match (s.min_opt(), s.max_opt()) {
            (Some(lo), Some(hi)) => b.excludes_text(lo.data(), hi.data()),
            _ => false,
        },
        _ => false,
    }
}

/// The latest event time in `rg`, in milliseconds, from a timestamp column's statistics.
fn latest_time(cx: &Context<'_>, rg: &RowGroupMetaData, column: &str) -> Option<i64> {
    let DataType::Timestamp(unit, _) = cx.file_schema.field_with_name(column).ok()?.data_type() else { return None };
    let Some(Statistics::Int64(s)) = stats(cx, rg, column) else { return None };
    let max = *s.max_opt()?;
    Some(match unit {
        TimeUnit::Second => max.checked_mul(1000)?,
        TimeUnit::Millisecond => max,
        TimeUnit::Microsecond => max.div_euclid(1000),
        TimeUnit::Nanosecond => max.div_euclid(1_000_000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(spec: &[(u64, bool, Option<i64>)]) -> RowGroups {
        RowGroups { groups: spec.iter().map(|&(rows, kept, max_event)| Group { rows, kept, max_event }).collect() }
    }

    #[test]
    fn rows_read_map_to_file_rows_across_skipped_groups() {
        let g = groups(&[(10, true, None), (5, false, Some(50)), (10, true, None), (3, false, Some(90))]);
        assert_eq!(g.kept(), vec![0, 2]);
        assert_eq!(g.kept_rows(), 20);
        assert_eq!((g.file_row(0), g.file_row(9), g.file_row(10), g.file_row(19)), (0, 9, 15, 24));
        assert_eq!(g.passed_event_time(0), None);
        assert_eq!(g.passed_event_time(9), None);
        assert_eq!(g.passed_event_time(10), Some(50), "the first group is read whole");
        assert_eq!(g.passed_event_time(20), Some(90));
    }
}
