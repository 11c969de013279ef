//! The webhook sender's settings (`AGENTQ_WEBHOOK_*`): the retry schedule, the time an attempt
//! may take, how often a worker looks for due deliveries and how many it sends at once.

use std::time::Duration;

use super::{ConfigError, Env};

/// After the first attempt fails, wait 5 s, 5 min, 30 min, 2 h, 5 h, 10 h between attempts
/// (Standard Webhooks' and Svix's schedule): seven attempts over about 17.6 hours.
pub const DEFAULT_SCHEDULE: [u64; 6] = [5, 300, 1800, 7200, 18000, 36000];
/// Retries of one message never span more than a day.
pub const MAX_SCHEDULE_SECS: u64 = 24 * 3600;
const SCHEDULE_FORM: &str = "comma-separated whole seconds to wait before each retry, e.g. \
     5,300,1800,7200,18000,36000, adding up to at most 86400 (24 h)";

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// The wait before each retry (`AGENTQ_WEBHOOK_RETRY_SCHEDULE`); a message whose attempts
    /// ran past the last one has failed.
    pub retry_schedule: Vec<Duration>,
    /// How long one attempt may take, connecting and answering included
    /// (`AGENTQ_WEBHOOK_TIMEOUT_SECS`).
    pub timeout: Duration,
    /// How often each worker looks for due deliveries (`AGENTQ_WEBHOOK_POLL_MS`).
    pub poll_interval: Duration,
    /// Attempts one worker makes at once (`AGENTQ_WEBHOOK_CONCURRENCY`).
    pub concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_schedule: DEFAULT_SCHEDULE.map(Duration::from_secs).to_vec(),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(1000),
            concurrency: 8,
        }
    }
}

impl WebhookSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let retry_schedule = match env.raw("AGENTQ_WEBHOOK_RETRY_SCHEDULE") {
            None => defaults.retry_schedule,
            Some(value) => parse_schedule(&value).ok_or(ConfigError::Malformed {
                var: "AGENTQ_WEBHOOK_RETRY_SCHEDULE",
                value,
                expected: SCHEDULE_FORM,
            })?,
        };
        let concurrency = env.parsed(
            "AGENTQ_WEBHOOK_CONCURRENCY",
            defaults.concurrency,
            "a number of attempts at once (at least 1)",
        )?;
        Ok(Self {
            retry_schedule,
            timeout: env.secs("AGENTQ_WEBHOOK_TIMEOUT_SECS", defaults.timeout.as_secs())?,
            poll_interval: env.millis(
                "AGENTQ_WEBHOOK_POLL_MS",
                defaults.poll_interval.as_millis() as u64,
            )?,
            concurrency: concurrency.max(1),
        })
    }

    /// When to try again after attempt `attempt` (1, 2, ...) failed; `None` once the schedule
    /// is spent.
    pub fn retry_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        self.retry_schedule.get(index).copied()
    }
}

/// `5,300,1800` as waits; `None` for anything but whole seconds adding up to at most a day.
fn parse_schedule(value: &str) -> Option<Vec<Duration>> {
    let secs: Vec<u64> = value
        .split(',')
        .map(|s| s.trim().parse().ok())
        .collect::<Option<_>>()?;
    let total = secs.iter().try_fold(0u64, |sum, s| sum.checked_add(*s))?;
    (total <= MAX_SCHEDULE_SECS).then(|| secs.into_iter().map(Duration::from_secs).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(schedule: &str) -> Result<WebhookSettings, String> {
        WebhookSettings::from_env(&Env::from_pairs(&[(
            "AGENTQ_WEBHOOK_RETRY_SCHEDULE",
            schedule,
        )]))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_schedule_stays_within_a_day() {
        let defaults = WebhookSettings::default();
        let total: Duration = defaults.retry_schedule.iter().sum();
        assert!(total <= Duration::from_secs(MAX_SCHEDULE_SECS), "{total:?}");
        assert_eq!(defaults.retry_after(1), Some(Duration::from_secs(5)));
        assert_eq!(defaults.retry_after(6), Some(Duration::from_secs(36000)));
        assert_eq!(defaults.retry_after(7), None);
        assert_eq!(defaults.retry_after(0), None);
    }

    #[test]
    fn a_schedule_is_whole_seconds_within_a_day() {
        assert_eq!(
            settings(" 1, 2 ").map(|s| s.retry_schedule),
            Ok(vec![Duration::from_secs(1), Duration::from_secs(2)])
        );
        for bad in ["1,,2", "1.5", "-1", "5m", "86400,1"] {
            let error = settings(bad).expect_err(bad);
            assert!(
                error.starts_with(&format!(
                    "AGENTQ_WEBHOOK_RETRY_SCHEDULE={bad:?} is malformed"
                )) && error.contains("at most 86400 (24 h)"),
                "{error}"
            );
        }
    }
}
