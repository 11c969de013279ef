//! JSON parameters bound to `$1, $2, ...` as the types Postgres inferred for them when the
//! statement was prepared, so `WHERE id = $1` works for an integer, uuid or enum column without
//! a cast. Values are always bound, never written into the SQL.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgTypeInfo, PgTypeKind, Postgres};
use sqlx::{Arguments, Type, TypeInfo};

/// Text sent as a type whose binary form is its text (enums, citext and other text-like types).
struct TextAs(String, PgTypeInfo);

impl Type<Postgres> for TextAs {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for TextAs {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.1.clone())
    }
}

/// NULL, of whatever type the parameter has.
struct Null(PgTypeInfo);

impl Type<Postgres> for Null {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Null {
    fn encode_by_ref(&self, _: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.0.clone())
    }
}

/// The arguments for a statement whose parameters have the types `types`.
pub fn bind(types: &[PgTypeInfo], params: &[Value]) -> Result<PgArguments, String> {
    if types.len() != params.len() {
        return Err(format!(
            "the query has {} parameter(s) ($1..${}) but {} value(s) were given in params",
            types.len(),
            types.len(),
            params.len()
        ));
    }
    let mut args = PgArguments::default();
    for (i, (ty, value)) in types.iter().zip(params).enumerate() {
        add(&mut args, ty, value).map_err(|why| {
            format!(
                "params[{i}] ({value}) cannot be bound to ${} of type {}: {why}; cast the \
                 parameter in the query, e.g. ${}::text",
                i + 1,
                ty.name(),
                i + 1
            )
        })?;
    }
    Ok(args)
}

fn add(args: &mut PgArguments, ty: &PgTypeInfo, value: &Value) -> Result<(), String> {
    let oid = ty.oid().map(|oid| oid.0).unwrap_or(0);
    let text = || match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let parse = |what: &str| format!("expected {what}");
    let added = match (oid, value) {
        (_, Value::Null) => args.add(Null(ty.clone())),
        (16, Value::Bool(b)) => args.add(*b),
        (21, _) => args.add(
            text()
                .parse::<i16>()
                .map_err(|_| parse("a small integer"))?,
        ),
        (23, _) => args.add(text().parse::<i32>().map_err(|_| parse("an integer"))?),
        (20, _) => args.add(text().parse::<i64>().map_err(|_| parse("an integer"))?),
        (700, _) => args.add(text().parse::<f32>().map_err(|_| parse("a number"))?),
        (701, _) => args.add(text().parse::<f64>().map_err(|_| parse("a number"))?),
        (1700, _) => args.add(
            text()
                .parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(&text()))
                .map_err(|_| parse("a decimal number"))?,
        ),
        (2950, _) => args.add(text().parse::<uuid::Uuid>().map_err(|_| parse("a uuid"))?),
        (114 | 3802, _) => args.add(sqlx::types::Json(value.clone())),
        (1082, _) => args.add(
            text()
                .parse::<NaiveDate>()
                .map_err(|_| parse("YYYY-MM-DD"))?,
        ),
        (1114, _) => args.add(
            text()
                .parse::<NaiveDateTime>()
                .map_err(|_| parse("YYYY-MM-DDTHH:MM:SS"))?,
        ),
        (1184, _) => args.add(
            text()
                .parse::<DateTime<Utc>>()
                .map_err(|_| parse("an RFC 3339 timestamp"))?,
        ),
        (25 | 1043 | 1042 | 19 | 705, _) => args.add(text()),
        (1007, Value::Array(items)) => args.add(list::<i32>(items)?),
        (1016, Value::Array(items)) => args.add(list::<i64>(items)?),
        (1009 | 1015, Value::Array(items)) => args.add(list::<String>(items)?),
        (2951, Value::Array(items)) => args.add(list::<uuid::Uuid>(items)?),
        _ if matches!(ty.kind(), PgTypeKind::Enum(_)) => args.add(TextAs(text(), ty.clone())),
        (16, _) => return Err(parse("true or false")),
        _ => return Err("sql_query does not bind this type".into()),
    };
    added.map_err(|e| e.to_string())
}

fn list<T: std::str::FromStr>(items: &[Value]) -> Result<Vec<T>, String> {
    items
        .iter()
        .map(|item| {
            let text = match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            text.parse::<T>()
                .map_err(|_| format!("array item {item} has the wrong type"))
        })
        .collect()
}
