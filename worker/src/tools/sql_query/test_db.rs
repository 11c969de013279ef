//! A seeded target database per test, made through `DATABASE_URL` (a role that may create
//! databases and roles), with the recommended read-only role and a writer role. Dropped, with
//! its roles, when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agentq_shared::config::{SqlQuerySettings, ToolSettings};
use uuid::Uuid;

use super::SqlQuery;

pub struct TargetDb {
    id: String,
    pub name: String,
    pub reader: String,
    pub writer: String,
    admin_url: String,
}

const SEED: &str = r#"
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE items (
    id serial PRIMARY KEY, name text, category text, price numeric(10, 2),
    created_at timestamptz, day date, uid uuid, meta jsonb, tags text[], mood mood
);
CREATE TABLE orders (id serial PRIMARY KEY, item_id int REFERENCES items, qty int);
INSERT INTO items (name, category, price, created_at, day, uid, meta, tags, mood) VALUES
  ('apple', 'fruit', 1.50, '2024-05-01 12:00:00+00', '2024-05-01',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"color": "red", "sizes": [1, 2]}', '{a,b}', 'happy'),
  ('pear', 'fruit', 2.25, '2024-05-02 08:30:00.5+02', '2024-05-02',
   'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '{"color": "green"}', '{}', 'sad'),
  ('mystery', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO items (name, category, price) SELECT 'bulk ' || g, 'bulk', g FROM generate_series(1, 300) g;
INSERT INTO orders (item_id, qty) VALUES (1, 3), (2, 5);
"#;

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(admin: &str, user: &str, database: &str) -> String {
    let mut url = reqwest::Url::parse(admin).expect("DATABASE_URL is a URL");
    url.set_path(database);
    if !user.is_empty() {
        url.set_username(user).unwrap();
        url.set_password(None).unwrap();
    }
    url.to_string()
}

async fn exec(url: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("Postgres at {url}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
}

impl TargetDb {
    pub async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let admin_url = admin_url();
        let db = Self {
            id: id.clone(),
            name: format!("agentq_sqltool_{id}"),
            reader: format!("agentq_reader_{id}"),
            writer: format!("agentq_writer_{id}"),
            admin_url,
        };
        exec(&db.admin_url, &format!("CREATE DATABASE {}", db.name)).await;
        let (reader, writer) = (&db.reader, &db.writer);
        let grants = format!(
            "{SEED}
            CREATE ROLE {reader} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
            GRANT USAGE ON SCHEMA public TO {reader};
            GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader};
            CREATE ROLE {writer} LOGIN NOSUPERUSER;
            GRANT USAGE ON SCHEMA public TO {writer};
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {writer};
            GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {writer};"
        );
        exec(&db.url(""), &grants).await;
        db
    }

    /// The URL of this database as `user` ("" for the admin user).
    pub fn url(&self, user: &str) -> String {
        url_for(&self.admin_url, user, &self.name)
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url("")).await.unwrap()
    }

    /// A tool on this database as `user`, with `tweak` applied to the default settings.
    pub fn tool(&self, user: &str, tweak: impl FnOnce(&mut SqlQuerySettings)) -> SqlQuery {
        tool_at(&self.url(user), tweak)
    }

    /// Everything the dangerous statements could change: the schema, the rows, the roles, the
    /// large objects and the files they would write.
    pub async fn fingerprint(&self) -> String {
        let pool = self.pool().await;
        let snapshot: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT concat_ws(' | ',
                (SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class
                  WHERE relnamespace = 'public'::regnamespace),
                (SELECT md5(string_agg(i::text, ',' ORDER BY i.id)) FROM items i),
                (SELECT count(*) FROM orders),
                (SELECT string_agg(rolname || rolsuper::text, ',' ORDER BY rolname) FROM pg_roles
                  WHERE rolname LIKE '%{}' OR rolname = 'agentq_evil'),
                (SELECT count(*) FROM pg_largeobject_metadata),
                (SELECT string_agg(grantee || privilege_type, ',' ORDER BY grantee, privilege_type)
                   FROM information_schema.role_table_grants WHERE table_name = 'items'))",
            self.id
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        let files = [
            "/tmp/agentq_pwned",
            "/tmp/agentq_items.csv",
            "/tmp/agentq_lo",
        ]
        .iter()
        .filter(|f| std::path::Path::new(f).exists())
        .count();
        format!("{snapshot} | files {files}")
    }
}

pub fn tool_at(url: &str, tweak: impl FnOnce(&mut SqlQuerySettings)) -> SqlQuery {
    let mut sql_query = SqlQuerySettings {
        url: Some(url.to_owned()),
        ..Default::default()
    };
    tweak(&mut sql_query);
    SqlQuery::new(&ToolSettings {
        sql_query,
        ..Default::default()
    })
    .unwrap()
}

impl Drop for TargetDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let roles = [self.reader.clone(), self.writer.clone()];
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&pool)
                        .await;
                    for role in roles {
                        let drop = format!("DROP ROLE IF EXISTS {role}");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                            .execute(&pool)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}
