//! The one error type of this crate, and how DataFusion's errors are sorted into it.
//! Every message names what went wrong (the column, the statement, the chunk's size) so a
//! person can fix the SQL or the input without reading a backtrace.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;

/// What can go wrong planning SQL for chunks, or running it on one.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL.
    #[error("SQL does not parse: {source}")]
    Parse {
        #[source]
        source: DataFusionError,
    },

    /// The query names a column the input does not have.
    #[error("SQL names column `{column}`, which the input table `chunk` does not have: {source}")]
    UnknownColumn {
        /// The column as written in the query.
        column: String,
        #[source]
        source: DataFusionError,
    },

    /// Valid SQL that cannot be planned against the input: an unknown table or function, a
    /// type error, or a statement that is not a query (DDL, DML, `SET`, `EXPLAIN ANALYZE`).
    #[error("SQL cannot be planned against the input table `chunk`: {source}")]
    Plan {
        #[source]
        source: DataFusionError,
    },

    /// A construct that plans in DataFusion but cannot be run once per chunk.
    #[error("SQL uses {what}, which per-chunk SQL does not support: {hint}")]
    Unsupported {
        /// The construct, e.g. "EXPLAIN ANALYZE".
        what: String,
        /// What to write instead.
        hint: String,
    },

    /// A window that `--windows global` cannot compute over the whole input.
    #[error("whole-input windows (--windows global) cannot compute `{window}`: {reason}")]
    GlobalWindow {
        /// The window expression, as DataFusion shows it.
        window: String,
        /// Why, and what to write instead.
        reason: String,
    },

    /// Pass 1 of a whole-input query failed on a chunk, or its results cannot be used.
    #[error("whole-input statistics (pass 1): {detail}")]
    GlobalPass {
        /// What failed, with the window or chunk it concerns.
        detail: String,
    },

    /// A chunk whose columns are not those the query was planned for.
    #[error("chunk does not match the schema the SQL was planned for: {detail}")]
    SchemaMismatch {
        /// The first difference found.
        detail: String,
    },

    /// Running the planned query on a chunk failed (a failed cast, a division error, ...).
    #[error("SQL failed on a chunk of {rows} rows: {source}")]
    Execute {
        /// Rows in the chunk that failed.
        rows: usize,
        #[source]
        source: DataFusionError,
    },
}

impl SqlError {
    /// Sorts an error from parsing or planning into `Parse`, `UnknownColumn` or `Plan`.
    pub(crate) fn from_planning(err: DataFusionError) -> Self {
        if is_parse_error(&err) {
            return SqlError::Parse { source: err };
        }
        match missing_column(&err) {
            Some(column) => SqlError::UnknownColumn {
                column,
                source: err,
            },
            None => SqlError::Plan { source: err },
        }
    }
}

/// True when the error, or one it wraps, comes from the SQL parser.
fn is_parse_error(err: &DataFusionError) -> bool {
    match err {
        DataFusionError::SQL(..) => true,
        DataFusionError::Collection(errs) => errs.iter().any(is_parse_error),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            is_parse_error(inner)
        }
        DataFusionError::Shared(inner) => is_parse_error(inner),
        _ => false,
    }
}

/// The name of the column a "no field named ..." error is about, looking through the
/// context, diagnostic and collection wrappers DataFusion puts around it.
fn missing_column(err: &DataFusionError) -> Option<String> {
    match err {
        DataFusionError::SchemaError(schema_err, _) => match schema_err.as_ref() {
            SchemaError::FieldNotFound { field, .. } => Some(field.name.clone()),
            _ => None,
        },
        DataFusionError::Collection(errs) => errs.iter().find_map(missing_column),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            missing_column(inner)
        }
        DataFusionError::Shared(inner) => missing_column(inner),
        _ => None,
    }
}
