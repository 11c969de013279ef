//! Functions `sql_query` never calls, whatever the role may do: they reach outside the query
//! (files, other servers, other sessions, the server's configuration) or run SQL text the policy
//! never saw. A trailing `*` matches a prefix. Names are compared lower-cased, ignoring the
//! schema, except for the schemas listed in [`DENIED_SCHEMAS`], denied whole.

const DENIED: &[(&str, &str)] = &[
    // Files on the database server.
    ("pg_read_file", "reads files on the database server"),
    ("pg_read_binary_file", "reads files on the database server"),
    ("pg_stat_file", "inspects files on the database server"),
    ("pg_ls_*", "lists directories on the database server"),
    ("pg_file_*", "writes files on the database server"),
    ("pg_logdir_ls", "lists the server's log directory"),
    ("pg_current_logfile", "inspects the server's log files"),
    // Large objects (lo_import/lo_export reach the server's file system).
    ("lo_*", "uses large objects"),
    ("loread", "uses large objects"),
    ("lowrite", "uses large objects"),
    // Other servers.
    ("dblink*", "connects to other databases"),
    ("http*", "makes network requests from the database"),
    // Other sessions and the server itself.
    ("pg_terminate_backend", "terminates other sessions"),
    ("pg_cancel_backend", "cancels other sessions' queries"),
    ("pg_signal_backend", "signals other sessions"),
    ("pg_reload_conf", "reloads the server's configuration"),
    ("pg_rotate_logfile", "rotates the server's log"),
    ("pg_promote", "promotes a standby"),
    (
        "pg_log_backend_memory_contexts",
        "writes to the server's log",
    ),
    ("pg_create_*", "creates replication slots or restore points"),
    ("pg_drop_*", "drops replication slots"),
    ("pg_copy_*", "copies replication slots"),
    ("pg_replication_*", "controls replication"),
    ("pg_logical_*", "controls logical replication"),
    ("pg_wal_*", "controls the write-ahead log"),
    ("pg_switch_wal", "controls the write-ahead log"),
    ("pg_backup_*", "controls backups"),
    ("pg_start_backup", "controls backups"),
    ("pg_stop_backup", "controls backups"),
    ("pg_stat_reset*", "resets statistics"),
    ("pg_import_system_collations", "changes the catalog"),
    ("binary_upgrade_*", "changes the catalog"),
    // Locks that outlive the statement.
    (
        "pg_advisory_*",
        "takes advisory locks that outlive the query",
    ),
    (
        "pg_try_advisory_*",
        "takes advisory locks that outlive the query",
    ),
    // Settings, notifications, sequences.
    (
        "set_config",
        "changes settings (SET in disguise: roles, read-only mode, timeouts)",
    ),
    ("pg_notify", "sends notifications (NOTIFY)"),
    ("setval", "changes a sequence"),
    // Functions that run SQL given as text, which the policy never checked.
    ("query_to_xml*", "runs SQL given as text"),
    ("cursor_to_xml*", "reads cursors"),
    ("database_to_xml*", "dumps the whole database"),
    ("schema_to_xml*", "dumps whole schemas"),
    ("ts_stat", "runs SQL given as text"),
    ("ts_rewrite", "can run SQL given as text"),
    // Sleeping: pg_sleep(n) with a literal n within the timeout is allowed (walk.rs).
    (
        "pg_sleep_for",
        "sleeps; use pg_sleep(seconds) within the statement timeout",
    ),
    (
        "pg_sleep_until",
        "sleeps; use pg_sleep(seconds) within the statement timeout",
    ),
];

/// Schemas of extensions that reach the network or schedule work (Supabase ships them).
const DENIED_SCHEMAS: &[(&str, &str)] = &[
    ("net", "makes network requests from the database (pg_net)"),
    ("cron", "schedules jobs (pg_cron)"),
    ("dblink", "connects to other databases"),
];

/// Why calling `name` (the parts of a possibly schema-qualified name) is refused, if it is.
pub fn denied(parts: &[String]) -> Option<&'static str> {
    let name = parts.last()?.to_ascii_lowercase();
    if parts.len() > 1 {
        let schema = parts[parts.len() - 2].to_ascii_lowercase();
        if let Some((_, why)) = DENIED_SCHEMAS.iter().find(|(s, _)| *s == schema) {
            return Some(why);
        }
    }
    DENIED
        .iter()
        .find(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        })
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::denied;

    fn parts(name: &str) -> Vec<String> {
        name.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn matches_names_prefixes_and_schemas_case_insensitively() {
        assert!(denied(&parts("pg_catalog.PG_READ_FILE")).is_some());
        assert!(denied(&parts("lo_import")).is_some());
        assert!(denied(&parts("dblink_exec")).is_some());
        assert!(denied(&parts("net.anything")).is_some());
        assert!(denied(&parts("count")).is_none());
        assert!(
            denied(&parts("pg_sleep")).is_none(),
            "checked with its argument"
        );
        assert!(denied(&parts("public.lower")).is_none());
    }
}
