//! A fixed SQL text with numbered parameters (`$1`, `$2`, ...), run as a
//! statement that each connection prepares once and keeps.
//!
//! diesel's `sql_query` marks itself unsafe to cache, so PostgreSQL parsed,
//! analysed and planned the refresh rotation's CTE on every call: a third of
//! the database's CPU in the refresh benchmark went to planning the same
//! statement again. Here diesel's statement cache keys the statement by its
//! SQL, which never changes, and PostgreSQL plans it once per connection.
//!
//! Each `$n` in the text becomes a placeholder of the backend's own
//! (`$k` on PostgreSQL, `?` on SQLite) bound to the n-th value, so one text
//! serves both backends and a value may appear more than once. On
//! PostgreSQL a value may also be an array ([`PgBind`]): a statement for
//! many rows at once (`unnest`), of a fixed text whatever their number.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Array, HasSqlType, Nullable, Text, Timestamp, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// One value of a [`Prepared`] statement.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    Text(&'a str),
    NullableText(Option<&'a str>),
    Timestamp(NaiveDateTime),
    NullableTimestamp(Option<NaiveDateTime>),
}

/// An array value of a [`Prepared`] statement on PostgreSQL (one per row,
/// for `unnest`).
#[derive(Debug, Clone)]
pub enum PgBind<'a> {
    Texts(Vec<&'a str>),
    Timestamps(Vec<NaiveDateTime>),
}

/// A value that binds on backend `DB`.
pub trait PushBind<DB: Backend> {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()>;
}

impl<DB> PushBind<DB> for Bind<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Timestamp>,
    str: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match self {
            Bind::Text(value) => out.push_bind_param::<Text, str>(value),
            Bind::NullableText(value) => out.push_bind_param::<Nullable<Text>, Option<&str>>(value),
            Bind::Timestamp(value) => out.push_bind_param::<Timestamp, NaiveDateTime>(value),
            Bind::NullableTimestamp(value) => {
                out.push_bind_param::<Nullable<Timestamp>, Option<NaiveDateTime>>(value)
            }
        }
    }
}

impl PushBind<Pg> for PgBind<'_> {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            PgBind::Texts(values) => out.push_bind_param::<Array<Text>, _>(values),
            PgBind::Timestamps(values) => out.push_bind_param::<Array<Timestamp>, _>(values),
        }
    }
}

/// See the module. Load its rows with a `QueryableByName` type, or
/// `execute` it. `B`: [`Bind`] (either backend) or [`PgBind`].
#[derive(Debug, Clone)]
pub struct Prepared<'a, B = Bind<'a>> {
    sql: &'a str,
    binds: &'a [B],
}

impl<'a, B> Prepared<'a, B> {
    /// `sql` names its values `$1` to `$n` (n the length of `binds`).
    pub fn new(sql: &'a str, binds: &'a [B]) -> Self {
        Self { sql, binds }
    }
}

impl<DB: Backend, B: PushBind<DB>> QueryFragment<DB> for Prepared<'_, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len() - at - 1, |end| end);
            let bind = rest[at + 1..at + 1 + digits]
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("no value for the parameter at byte {at}").into(),
                    )
                })?;
            bind.push(&mut out)?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

/// Not a static id: the statement cache keys it by its SQL.
impl<B> QueryId for Prepared<'_, B> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<B> Query for Prepared<'_, B> {
    type SqlType = Untyped;
}

impl<Conn, B> RunQueryDsl<Conn> for Prepared<'_, B> {}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::debug_query;
    use diesel::pg::Pg;
    use diesel::sqlite::Sqlite;

    #[test]
    fn numbered_parameters_become_each_backends_placeholders_in_order() {
        let binds = [Bind::Text("a"), Bind::Text("b")];
        let query = Prepared::new("SELECT $2, $1 WHERE x = $2", &binds);
        let pg = debug_query::<Pg, _>(&query).to_string();
        assert!(pg.starts_with("SELECT $1, $2 WHERE x = $3"), "{pg}");
        assert!(pg.contains(r#"["b", "a", "b"]"#), "{pg}");
        let lite = debug_query::<Sqlite, _>(&query).to_string();
        assert!(lite.starts_with("SELECT ?, ? WHERE x = ?"), "{lite}");
    }

    #[test]
    fn a_parameter_without_a_value_is_an_error_not_a_panic() {
        let binds = [Bind::Text("a")];
        for sql in ["SELECT $2", "SELECT $", "SELECT $0"] {
            let query = Prepared::new(sql, &binds);
            let mut out = diesel::pg::PgQueryBuilder::default();
            let built = QueryFragment::<Pg>::to_sql(&query, &mut out, &Pg);
            assert!(built.is_err(), "{sql}");
        }
    }
}
