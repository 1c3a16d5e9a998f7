//! Decoding helpers shared by the repositories' row mappings: typed ids and string enums from
//! their column types.

use std::str::FromStr;

use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

/// A uuid column as a typed id.
pub(crate) fn id<T: From<Uuid>>(row: &PgRow, col: &str) -> Result<T, sqlx::Error> {
    Ok(T::from(row.try_get::<Uuid, _>(col)?))
}

/// A nullable uuid column as a typed id.
pub(crate) fn opt_id<T: From<Uuid>>(row: &PgRow, col: &str) -> Result<Option<T>, sqlx::Error> {
    Ok(row.try_get::<Option<Uuid>, _>(col)?.map(T::from))
}

/// A text column holding one of a domain enum's values.
pub(crate) fn enumeration<T>(row: &PgRow, col: &str) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = row.try_get(col)?;
    s.parse().map_err(|e: T::Err| sqlx::Error::ColumnDecode { index: col.to_owned(), source: Box::new(e) })
}
