//! Cron schedules: five fields (`*/5 * * * *`), or six with seconds first (`*/10 * * * * *`), in
//! UTC.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};

/// Why a cron expression is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("{text:?} is not a cron expression: it needs 5 fields (minute hour day month weekday) or 6 with seconds first, found {found}")]
    Fields { text: String, found: usize },
    #[error("{text:?} is not a valid cron expression: {reason}")]
    Invalid { text: String, reason: String },
    #[error("{text:?} never occurs")]
    Never { text: String },
}

/// A parsed cron schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    text: String,
}

impl Schedule {
    /// Parses a cron expression; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(CronError::Fields {
                text: text.to_string(),
                found: fields,
            });
        }
        let cron = croner::Cron::from_str(text).map_err(|e| CronError::Invalid {
            text: text.to_string(),
            reason: e.to_string(),
        })?;
        let schedule = Self {
            cron,
            text: text.trim().to_string(),
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(CronError::Never {
                text: text.to_string(),
            });
        }
        Ok(schedule)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `time`.
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&time, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn cron_expressions_parse_with_clear_errors() {
        let every_five = Schedule::parse("*/5 * * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 10, 2, 0).unwrap();
        assert_eq!(
            every_five.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap())
        );
        let seconds = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            seconds.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 2, 10).unwrap())
        );
        assert!(Schedule::parse("every day")
            .unwrap_err()
            .to_string()
            .contains("5 fields"));
        assert!(matches!(
            Schedule::parse("61 * * * *"),
            Err(CronError::Invalid { .. })
        ));
    }
}
