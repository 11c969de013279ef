//! Postgres values to JSON, decoded from the binary wire format by type OID, so every row maps
//! the same way whatever sqlx knows about the type:
//!
//! - bool, integers, oid → JSON booleans and numbers; float4/8 → numbers (`"NaN"`,
//!   `"Infinity"`, `"-Infinity"` as strings);
//! - numeric → a **string** with the exact digits (`"12.50"`, `"NaN"`), never a lossy float;
//! - text-like types and enums → strings; json/jsonb → the JSON value itself;
//! - uuid → its hyphenated string; bytea → `"\\x0a1b..."`;
//! - timestamptz → RFC 3339 in UTC (`2024-05-01T12:00:00Z`); timestamp (no zone) → the same
//!   without offset; date → `YYYY-MM-DD`; time → `HH:MM:SS[.ffffff]`; `±infinity` as strings;
//! - interval → ISO 8601 (`P1M2DT3H`); inet/cidr → their usual text;
//! - arrays (any dimension) → nested JSON arrays of the above; NULL → null;
//! - anything else → a string saying which type to cast to text.

use chrono::{Duration, NaiveDate, NaiveTime, SecondsFormat};
use serde_json::{Value, json};
use sqlx::TypeInfo;
use sqlx::postgres::{PgTypeInfo, PgTypeKind};

/// A value of a column of type `ty`; `bytes` is `None` for NULL.
pub fn to_json(ty: &PgTypeInfo, bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    match ty.kind() {
        PgTypeKind::Enum(_) => return text(bytes),
        PgTypeKind::Domain(base) => return to_json(base, Some(bytes)),
        _ => {}
    }
    let oid = ty.oid().map(|oid| oid.0).unwrap_or(0);
    if matches!(ty.kind(), PgTypeKind::Array(_)) {
        return array(bytes).unwrap_or_else(|| unsupported(ty.name()));
    }
    scalar(oid, bytes).unwrap_or_else(|| unsupported(ty.name()))
}

fn unsupported(name: &str) -> Value {
    json!(format!(
        "<{name} value: cast it to text in the query to read it>"
    ))
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn be<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.get(..N)?.try_into().ok()
}

fn scalar(oid: u32, bytes: &[u8]) -> Option<Value> {
    let epoch = || NaiveDate::from_ymd_opt(2000, 1, 1).map(|d| d.and_time(NaiveTime::MIN));
    Some(match oid {
        16 => json!(*bytes.first()? != 0),
        21 => json!(i16::from_be_bytes(be(bytes)?)),
        23 => json!(i32::from_be_bytes(be(bytes)?)),
        20 => json!(i64::from_be_bytes(be(bytes)?)),
        26 => json!(u32::from_be_bytes(be(bytes)?)),
        700 => float(f32::from_be_bytes(be(bytes)?) as f64),
        701 => float(f64::from_be_bytes(be(bytes)?)),
        1700 => json!(numeric(bytes)?),
        // text, varchar, bpchar, name, "char", unknown, xml
        25 | 1043 | 1042 | 19 | 18 | 705 | 142 => text(bytes),
        114 => serde_json::from_slice(bytes).unwrap_or_else(|_| text(bytes)),
        3802 => {
            let body = bytes.get(1..)?;
            serde_json::from_slice(body).unwrap_or_else(|_| text(body))
        }
        2950 => json!(uuid::Uuid::from_slice(bytes).ok()?.to_string()),
        17 => json!(format!("\\x{}", hex(bytes))),
        1082 => match i32::from_be_bytes(be(bytes)?) {
            i32::MAX => json!("infinity"),
            i32::MIN => json!("-infinity"),
            days => json!((epoch()?.date() + Duration::days(days.into())).to_string()),
        },
        1083 => json!(time(i64::from_be_bytes(be(bytes)?))?),
        1114 | 1184 => match i64::from_be_bytes(be(bytes)?) {
            i64::MAX => json!("infinity"),
            i64::MIN => json!("-infinity"),
            micros => {
                let at = epoch()? + Duration::microseconds(micros);
                if oid == 1184 {
                    json!(at.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true))
                } else {
                    json!(at.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
                }
            }
        },
        1186 => json!(interval(
            i64::from_be_bytes(be(bytes)?),
            i32::from_be_bytes(be(bytes.get(8..)?)?),
            i32::from_be_bytes(be(bytes.get(12..)?)?),
        )),
        869 | 650 => json!(inet(bytes, oid == 650)?),
        _ => return None,
    })
}

fn float(value: f64) -> Value {
    if value.is_nan() {
        json!("NaN")
    } else if value.is_infinite() {
        json!(if value > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(value)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn time(micros: i64) -> Option<String> {
    let secs = u32::try_from(micros.div_euclid(1_000_000)).ok()?;
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000).ok()?;
    Some(
        NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)?
            .format("%H:%M:%S%.f")
            .to_string(),
    )
}

/// ISO 8601: `P1Y2M3DT4H5M6.5S`, `PT0S` for zero.
fn interval(micros: i64, days: i32, months: i32) -> String {
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (value, unit) in [(years, 'Y'), (months, 'M'), (days, 'D')] {
        if value != 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    if micros != 0 || out == "P" {
        out.push('T');
        let (hours, rest) = (micros / 3_600_000_000, micros % 3_600_000_000);
        let (minutes, rest) = (rest / 60_000_000, rest % 60_000_000);
        if hours != 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if rest != 0 || (hours == 0 && minutes == 0) {
            let seconds = format!("{}.{:06}", rest / 1_000_000, (rest % 1_000_000).abs());
            let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
            let sign = if rest < 0 && !seconds.starts_with('-') {
                "-"
            } else {
                ""
            };
            out.push_str(&format!("{sign}{seconds}S"));
        }
    }
    out
}

/// numeric's binary form: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric(bytes: &[u8]) -> Option<String> {
    let word = |at: usize| be::<2>(bytes.get(at..)?).map(u16::from_be_bytes);
    let (ndigits, weight, sign, dscale) = (word(0)?, word(2)? as i16, word(4)?, word(6)?);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits as usize)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for i in 1..=weight as i32 {
            out.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut i = weight as i32 + 1;
        while fraction.len() < dscale as usize {
            fraction.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        fraction.truncate(dscale as usize);
        out.push('.');
        out.push_str(&fraction);
    }
    Some(out)
}

/// inet/cidr: family, bits, is_cidr, length, address bytes.
fn inet(bytes: &[u8], cidr: bool) -> Option<String> {
    let (family, bits) = (*bytes.first()?, *bytes.get(1)?);
    let address = bytes.get(4..)?;
    let (text, full) = match family {
        2 => (std::net::Ipv4Addr::from(be::<4>(address)?).to_string(), 32),
        3 => (
            std::net::Ipv6Addr::from(be::<16>(address)?).to_string(),
            128,
        ),
        _ => return None,
    };
    Some(if bits == full && !cidr {
        text
    } else {
        format!("{text}/{bits}")
    })
}

/// An array: ndim, has-null flag, element OID, (length, lower bound) per dimension, then each
/// element as a length (-1 for NULL) and its bytes.
fn array(bytes: &[u8]) -> Option<Value> {
    let int = |at: usize| be::<4>(bytes.get(at..)?).map(i32::from_be_bytes);
    let ndim = usize::try_from(int(0)?).ok()?;
    if ndim == 0 {
        return Some(Value::Array(Vec::new()));
    }
    let element = u32::try_from(int(8)?).ok()?;
    let dims: Vec<usize> = (0..ndim)
        .map(|d| usize::try_from(int(12 + 8 * d)?).ok())
        .collect::<Option<_>>()?;
    let mut at = 12 + 8 * ndim;
    let mut values = Vec::new();
    for _ in 0..dims.iter().product::<usize>() {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            values.push(Value::Null);
        } else {
            let body = bytes.get(at..at + len as usize)?;
            values.push(scalar(element, body).unwrap_or_else(|| text(body)));
            at += len as usize;
        }
    }
    // Fold the flat list into nested arrays, innermost dimension first.
    for &size in dims.iter().skip(1).rev() {
        values = values
            .chunks(size.max(1))
            .map(|chunk| Value::Array(chunk.to_vec()))
            .collect();
    }
    Some(Value::Array(values))
}
