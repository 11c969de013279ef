//! Rows, types and parameters against a seeded database (`test_db.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pretty_assertions::assert_eq;
use serde_json::json;

use super::db_tests::call;
use super::test_db::TargetDb;

#[tokio::test]
async fn parameterized_reads_return_the_rows_and_types() {
    let db = TargetDb::new().await;
    let tool = db.tool(&db.reader, |_| {});
    let result = call(
        &tool,
        "SELECT id, name, price, created_at, day, uid, meta, tags, mood, category
           FROM items WHERE category = $1 OR id = $2 ORDER BY id",
        json!(["fruit", 3]),
    )
    .await
    .unwrap();
    let columns: Vec<(String, String)> = result["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let names = "id name price created_at day uid meta tags mood category";
    let types = "int4 text numeric timestamptz date uuid jsonb text[] mood text";
    assert_eq!(
        columns,
        names
            .split(' ')
            .zip(types.split(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (&result["rows"], &result["row_count"], &result["truncated"]),
        (
            &json!([
                [1, "apple", "1.50", "2024-05-01T12:00:00Z", "2024-05-01",
                 "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", {"color": "red", "sizes": [1, 2]},
                 ["a", "b"], "happy", "fruit"],
                [2, "pear", "2.25", "2024-05-02T06:30:00.500Z", "2024-05-02",
                 "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12", {"color": "green"}, [], "sad", "fruit"],
                [3, "mystery", null, null, null, null, null, null, null, null]
            ]),
            &json!(3),
            &json!(false)
        )
    );

    // Parameters take the type Postgres infers: uuid, enum, jsonb, arrays, timestamps, NULL.
    for (query, params, ids) in [
        (
            "SELECT id FROM items WHERE uid = $1",
            json!(["b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"]),
            json!([[2]]),
        ),
        (
            "SELECT id FROM items WHERE mood = $1",
            json!(["happy"]),
            json!([[1]]),
        ),
        (
            "SELECT id FROM items WHERE meta @> $1",
            json!([{"color": "green"}]),
            json!([[2]]),
        ),
        (
            "SELECT id FROM items WHERE id = ANY($1) ORDER BY id",
            json!([[1, 3]]),
            json!([[1], [3]]),
        ),
        (
            "SELECT id FROM items WHERE created_at > $1",
            json!(["2024-05-01T13:00:00Z"]),
            json!([[2]]),
        ),
        (
            "SELECT id FROM items WHERE price = $1",
            json!([2.25]),
            json!([[2]]),
        ),
        (
            "SELECT id FROM items WHERE name = $1 OR $2::text IS NULL AND id = 1",
            json!(["pear", null]),
            json!([[1], [2]]),
        ),
        (
            "SELECT $1 || '; DROP TABLE items'",
            json!(["x'"]),
            json!([["x'; DROP TABLE items"]]),
        ),
    ] {
        let result = call(&tool, query, params)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(result["rows"], ids, "{query}");
    }
    let mismatch = call(&tool, "SELECT id FROM items WHERE id = $1", json!([])).await;
    assert_eq!(
        mismatch.unwrap_err(),
        "the query has 1 parameter(s) ($1..$1) but 0 value(s) were given in params"
    );
}

#[tokio::test]
async fn common_types_map_to_json() {
    let db = TargetDb::new().await;
    let tool = db.tool(&db.reader, |_| {});
    let result = call(
        &tool,
        "SELECT 12345678901234567890.123456789::numeric, -0.0012::numeric, 'NaN'::numeric,
                10000::numeric, 42::int8, 1.5::float8, 'Infinity'::float4, true,
                '2024-02-29 23:59:59.123456'::timestamp, 'infinity'::timestamptz,
                '13:45:00'::time, '1 year 2 mons 3 days 04:05:06.5'::interval,
                '\\xdeadbeef'::bytea, '192.168.0.1'::inet, '10.0.0.0/8'::cidr,
                ARRAY[[1, 2], [3, NULL]]::int4[], ARRAY['2024-01-01'::date],
                '[1, {\"a\": null}]'::json, NULL::text, 'x'::varchar(5)",
        json!([]),
    )
    .await
    .unwrap();
    assert_eq!(
        result["rows"][0],
        json!([
            "12345678901234567890.123456789", "-0.0012", "NaN", "10000", 42, 1.5, "Infinity",
            true, "2024-02-29T23:59:59.123456", "infinity", "13:45:00", "P1Y2M3DT4H5M6.5S",
            "\\xdeadbeef", "192.168.0.1", "10.0.0.0/8", [[1, 2], [3, null]], ["2024-01-01"],
            [1, {"a": null}], null, "x"
        ])
    );
}
