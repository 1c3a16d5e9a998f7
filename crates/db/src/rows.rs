//! Decoding helpers shared by the repositories' row mappings: typed ids and string enums from
//! their column types, and pages read together with their total.

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

/// A page read as `select t.total, p.* from (select count(*) ...) t left join lateral (...) p on
/// true`: the total from the first row, and an item from every row whose `id` is not null (a
/// page past the end is one row of nulls, so the total still comes back).
pub(crate) fn page<T>(rows: &[PgRow]) -> Result<(Vec<T>, i64), sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, PgRow>,
{
    let total = match rows.first() {
        Some(r) => r.try_get("total")?,
        None => 0,
    };
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
            items.push(T::from_row(row)?);
        }
    }
    Ok((items, total))
}
