//! The catalog's database connection: the embedded SQLite file (the
//! default), or a PostgreSQL server that several coffer processes share.
//!
//! The catalog writes its SQL once, in the dialect both accept: `?N`
//! placeholders (rewritten to `$N` for PostgreSQL), `ON CONFLICT … DO`
//! upserts, `RETURNING id`. Values cross as [`Value`]s, so the two drivers'
//! type systems stay here. The schema's DDL is translated once, by
//! [`postgres_ddl`]; everything else is the same text on both.
//!
//! Writers are serialized on both: SQLite has one writer at a time by
//! design; on PostgreSQL every catalog transaction first takes a
//! transaction-scoped advisory lock ([`WRITER_LOCK`]), so a refresh on one
//! machine and a refresh on another apply one after the other, as they
//! would on one SQLite file.

use std::cell::RefCell;
use std::fmt;

use rusqlite::types::ValueRef;

use super::CatalogError;

/// The advisory lock key every catalog write transaction takes on
/// PostgreSQL ("coffer-w" in ASCII).
pub const WRITER_LOCK: i64 = 0x636f_6666_6572_2d77;
/// The advisory lock key of the runner lock on PostgreSQL ("coffer-r").
pub const RUNNER_LOCK: i64 = 0x636f_6666_6572_2d72;
/// The advisory lock key of repository maintenance on PostgreSQL
/// ("coffer-g"): gc and prune hold it exclusively, workers' backups share
/// it.
pub const MAINTENANCE_LOCK: i64 = 0x636f_6666_6572_2d67;
/// The advisory lock key migrations take on PostgreSQL ("coffer-m").
pub const MIGRATION_LOCK: i64 = 0x636f_6666_6572_2d6d;

/// One value in or out of the database.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A value that can be bound to a placeholder.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// The arguments of one statement: `args![a, b, c]`.
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        &[$($crate::catalog::db::ToValue::to_value(&$x)),*][..]
    };
}
pub(crate) use args;

/// A value read out of a column.
pub trait FromValue: Sized {
    fn from_value(v: Value) -> Result<Self, Value>;
}

impl FromValue for String {
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Text(s) => Ok(s),
            v => Err(v),
        }
    }
}
impl FromValue for i64 {
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Int(i) => Ok(i),
            v => Err(v),
        }
    }
}
impl FromValue for i32 {
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Int(i) => i32::try_from(i).map_err(|_| Value::Int(i)),
            v => Err(v),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            v => Err(v),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: Value) -> Result<Self, Value> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of a result.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i` as a `T`; a value of another type is a `BadValue`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, CatalogError> {
        convert(self.0.get(i).cloned().unwrap_or(Value::Null))
    }

    /// Column `i` as a `T`, moved out of the row (which keeps a NULL
    /// there): no copy of the text, for the reads of whole catalogs.
    pub fn take<T: FromValue>(&mut self, i: usize) -> Result<T, CatalogError> {
        convert(self.0.get_mut(i).map_or(Value::Null, std::mem::take))
    }
}

fn convert<T: FromValue>(v: Value) -> Result<T, CatalogError> {
    T::from_value(v).map_err(|v| CatalogError::BadValue {
        what: "column of an unexpected type",
        value: format!("{v:?}"),
    })
}

/// The open database.
pub enum Db {
    Sqlite(rusqlite::Connection),
    /// A `RefCell`: the client needs `&mut` to send, the catalog's readers
    /// take `&self`. A catalog is used by one thread at a time, as a
    /// rusqlite connection is.
    Postgres(RefCell<postgres::Client>),
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Db::Sqlite(_) => "Db::Sqlite",
            Db::Postgres(_) => "Db::Postgres",
        })
    }
}

impl Db {
    /// Runs one statement; answers the number of rows it changed.
    pub fn execute(&self, sql: &str, args: &[Value]) -> Result<usize, CatalogError> {
        match self {
            Db::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args.iter().map(sqlite_value)))?),
            Db::Postgres(c) => {
                let args = pg_args(args);
                let n = c
                    .borrow_mut()
                    .execute(postgres_sql(sql).as_str(), &pg_refs(&args))?;
                Ok(n as usize)
            }
        }
    }

    /// Runs an `INSERT`; answers the new row's `id`.
    pub fn insert(&self, sql: &str, args: &[Value]) -> Result<i64, CatalogError> {
        let sql = format!("{sql} RETURNING id");
        self.query_one(&sql, args)?
            .ok_or_else(|| CatalogError::BadValue {
                what: "insert answered no id",
                value: sql.clone(),
            })?
            .get(0)
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, CatalogError> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let width = stmt.column_count();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(args.iter().map(sqlite_value)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut row = Vec::with_capacity(width);
                    for i in 0..width {
                        row.push(match r.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(i) => Value::Int(i),
                            ValueRef::Real(f) => Value::Real(f),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                        });
                    }
                    out.push(Row(row));
                }
                Ok(out)
            }
            Db::Postgres(c) => {
                let args = pg_args(args);
                let rows = c
                    .borrow_mut()
                    .query(postgres_sql(sql).as_str(), &pg_refs(&args))?;
                rows.iter().map(pg_row).collect()
            }
        }
    }

    /// The first row of a query, if any.
    pub fn query_one(&self, sql: &str, args: &[Value]) -> Result<Option<Row>, CatalogError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// Runs several statements (no arguments), as migrations are.
    pub fn batch(&self, sql: &str) -> Result<(), CatalogError> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(c) => Ok(c.borrow_mut().batch_execute(sql)?),
        }
    }

    /// Runs `f`'s reads in one snapshot of the database: every query sees
    /// the same committed state, whatever commits meanwhile. Nothing is
    /// written; a writer is not held back on PostgreSQL, nor in SQLite's
    /// WAL mode.
    pub fn snapshot<T>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        match self {
            Db::Sqlite(_) => self.batch("BEGIN DEFERRED")?,
            Db::Postgres(_) => self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?,
        }
        let out = f(self);
        // A read-only transaction: ending it cannot lose anything.
        let ended = self.batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let out = out?;
        ended?;
        Ok(out)
    }

    /// Runs `f` in one write transaction: all of it or nothing. On
    /// PostgreSQL the transaction first takes the catalog's writer lock.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Db) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        match self {
            Db::Sqlite(_) => self.batch("BEGIN")?,
            Db::Postgres(_) => {
                self.batch("BEGIN")?;
                if let Err(e) = self.execute("SELECT pg_advisory_xact_lock(?1)", args![WRITER_LOCK])
                {
                    let _ = self.batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.batch("COMMIT") {
                    let _ = self.batch("ROLLBACK");
                    return Err(e);
                }
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Int(i) => S::Integer(*i),
        Value::Real(f) => S::Real(*f),
        Value::Text(t) => S::Text(t.clone()),
    }
}

/// The catalog's SQL with `?N` (and bare `?`) placeholders as PostgreSQL
/// writes them, `$N`. Quoted text is left alone.
pub fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    let mut bare = 0;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if digits.is_empty() {
            bare += 1;
            digits = bare.to_string();
        }
        out.push('$');
        out.push_str(&digits);
    }
    out
}

/// The schema's SQLite DDL as PostgreSQL takes it, with the same meaning:
/// SQLite's 64-bit `INTEGER` is `BIGINT`, an `INTEGER PRIMARY KEY` (a row
/// id SQLite assigns) is an identity column, `REAL` is `DOUBLE PRECISION`,
/// and text compares byte by byte (`COLLATE "C"`) as in SQLite, whatever
/// the server's locale: the catalog's times are text whose order is time
/// order, and its listings are ordered by name.
pub fn postgres_ddl(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    for line in sql.lines() {
        let (code, comment) = match line.find("--") {
            Some(at) => line.split_at(at),
            None => (line, ""),
        };
        let code = code.replace(
            "INTEGER PRIMARY KEY",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        );
        let mut words = Vec::new();
        for w in code.split(' ') {
            words.push(match w {
                "INTEGER" => "BIGINT",
                "INTEGER," => "BIGINT,",
                "INTEGER;" => "BIGINT;",
                "REAL" => "DOUBLE PRECISION",
                "REAL," => "DOUBLE PRECISION,",
                "REAL;" => "DOUBLE PRECISION;",
                "TEXT" => "TEXT COLLATE \"C\"",
                "TEXT," => "TEXT COLLATE \"C\",",
                "TEXT;" => "TEXT COLLATE \"C\";",
                w => w,
            });
        }
        out.push_str(&words.join(" "));
        out.push_str(comment);
        out.push('\n');
    }
    out
}

/// A `Value` bound to a PostgreSQL parameter, converted to the type the
/// server inferred for it.
#[derive(Debug)]
struct PgValue<'a>(&'a Value);

impl postgres::types::ToSql for PgValue<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self.0 {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_args(args: &[Value]) -> Vec<PgValue<'_>> {
    args.iter().map(PgValue).collect()
}

fn pg_refs<'a>(args: &'a [PgValue<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row, CatalogError> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = match *ty {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            _ => r.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers_outside_quoted_text() {
        assert_eq!(
            postgres_sql("SELECT '?1' FROM t WHERE a = ?1 AND b = ?12 AND c = ?"),
            "SELECT '?1' FROM t WHERE a = $1 AND b = $12 AND c = $1"
        );
    }

    #[test]
    fn the_ddl_keeps_sqlite_meaning_on_postgres() {
        let ddl = postgres_ddl(
            "CREATE TABLE x (\n    id INTEGER PRIMARY KEY,\n    n INTEGER NOT NULL, -- an INTEGER\n    \
             t TEXT,\n    r REAL\n);\nALTER TABLE x ADD COLUMN s TEXT;",
        );
        assert!(
            ddl.contains("id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"),
            "{ddl}"
        );
        assert!(ddl.contains("n BIGINT NOT NULL, -- an INTEGER"), "{ddl}");
        assert!(ddl.contains("t TEXT COLLATE \"C\","), "{ddl}");
        assert!(ddl.contains("r DOUBLE PRECISION\n"), "{ddl}");
        assert!(ddl.contains("ADD COLUMN s TEXT COLLATE \"C\";"), "{ddl}");
    }
}
