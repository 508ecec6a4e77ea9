//! The saga list's query: filters, page size and the keyset cursor, parsed from the query
//! string with errors that name the parameter. Pure.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use saga_core::SagaStatus;
use uuid::Uuid;

use crate::problem::ApiError;

/// The query parameters `GET /v1/sagas` knows.
pub const PARAMETERS: &[&str] = &[
    "status",
    "definition",
    "version",
    "step",
    "parked",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
    "cursor",
    "limit",
];

/// Page sizes: the default and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Sagas per page when `limit` is absent.
    pub default: u32,
    /// The largest page; a larger `limit` is capped to it.
    pub max: u32,
}

/// Which sagas, newest first, from where.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SagaFilter {
    /// Any of these statuses (empty: any status).
    pub statuses: Vec<SagaStatus>,
    /// Definition name.
    pub definition: Option<String>,
    /// Definition version.
    pub version: Option<i32>,
    /// The step the saga is at.
    pub step: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Last changed at or after.
    pub updated_after: Option<DateTime<Utc>>,
    /// Last changed before.
    pub updated_before: Option<DateTime<Utc>>,
    /// Continue after this saga (exclusive).
    pub after: Option<Cursor>,
    /// Page size, capped.
    pub limit: u32,
}

/// A position in the list's order (`created_at` descending, then id descending). Written
/// as `<microseconds since the epoch>_<uuid>`; opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last saga of the previous page.
    pub created_at: DateTime<Utc>,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// The cursor's text form.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    /// Reads a cursor back. Its time must fall in the years 1 to 9999 (any saga's does),
    /// so that a forged one is a 400 here rather than an out-of-range error in Postgres.
    pub fn decode(text: &str) -> Result<Cursor, ApiError> {
        let wrong = || ApiError::bad_field("cursor", "not a cursor this API gave out");
        let (micros, id) = text.split_once('_').ok_or_else(wrong)?;
        let micros: i64 = micros.parse().map_err(|_| wrong())?;
        let created_at = Utc
            .timestamp_micros(micros)
            .single()
            .filter(|t| (1..=9999).contains(&t.year()))
            .ok_or_else(wrong)?;
        let id = Uuid::parse_str(id).map_err(|_| wrong())?;
        Ok(Cursor { created_at, id })
    }
}

impl SagaFilter {
    /// Parses the query string's pairs. Unknown parameters and repeated ones (other than
    /// `status`) are errors, so a typo never silently lists everything.
    pub fn parse(pairs: &[(String, String)], limits: PageLimits) -> Result<SagaFilter, ApiError> {
        let mut filter = SagaFilter {
            limit: limits.default,
            ..SagaFilter::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut parked: Option<bool> = None;
        for (name, value) in pairs {
            let Some(known) = PARAMETERS.iter().find(|p| **p == name.as_str()) else {
                return Err(ApiError::bad_field(
                    name.clone(),
                    format!("unknown parameter; known: {}", PARAMETERS.join(", ")),
                ));
            };
            if *known != "status" && seen.contains(known) {
                return Err(ApiError::bad_field(*known, "given more than once"));
            }
            seen.push(known);
            match *known {
                "status" => {
                    for part in value.split(',').filter(|p| !p.is_empty()) {
                        let status = part.parse::<SagaStatus>().map_err(|_| {
                            ApiError::bad_field(
                                "status",
                                format!(
                                    "`{part}` is not a status; one of {}",
                                    SagaStatus::all()
                                        .map(SagaStatus::as_str)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })?;
                        if !filter.statuses.contains(&status) {
                            filter.statuses.push(status);
                        }
                    }
                }
                "definition" => filter.definition = Some(non_empty("definition", value)?),
                "step" => filter.step = Some(non_empty("step", value)?),
                "version" => {
                    filter.version = Some(
                        value
                            .parse::<i32>()
                            .ok()
                            .filter(|v| *v >= 1)
                            .ok_or_else(|| {
                                ApiError::bad_field("version", "must be a whole number from 1")
                            })?,
                    )
                }
                "parked" => {
                    parked = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(ApiError::bad_field("parked", "must be true or false")),
                    })
                }
                "created_after" => filter.created_after = Some(time("created_after", value)?),
                "created_before" => filter.created_before = Some(time("created_before", value)?),
                "updated_after" => filter.updated_after = Some(time("updated_after", value)?),
                "updated_before" => filter.updated_before = Some(time("updated_before", value)?),
                "cursor" => filter.after = Some(Cursor::decode(value)?),
                "limit" => {
                    let limit: u32 = value.parse().ok().filter(|l| *l >= 1).ok_or_else(|| {
                        ApiError::bad_field("limit", "must be a whole number from 1")
                    })?;
                    filter.limit = limit.min(limits.max);
                }
                _ => unreachable!("every known parameter is matched above"),
            }
        }
        if let Some(parked) = parked {
            let wanted = |s: &SagaStatus| (*s == SagaStatus::Parked) == parked;
            if filter.statuses.is_empty() {
                filter.statuses = SagaStatus::all().filter(wanted).collect();
            } else {
                filter.statuses.retain(wanted);
                if filter.statuses.is_empty() {
                    return Err(ApiError::bad_field(
                        "parked",
                        "contradicts `status`: no saga can match both",
                    ));
                }
            }
        }
        Ok(filter)
    }
}

/// A text filter: not empty, and free of NUL characters (which Postgres text cannot hold).
fn non_empty(field: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::bad_field(field, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(ApiError::bad_field(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(value.to_string())
}

fn time(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_field(field, "must be an RFC 3339 time, e.g. 2026-11-23T10:00:00Z")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        default: 50,
        max: 500,
    };

    fn parse(query: &[(&str, &str)]) -> Result<SagaFilter, ApiError> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SagaFilter::parse(&pairs, LIMITS)
    }

    #[test]
    fn filters_parse_and_the_limit_is_capped() {
        let filter = parse(&[
            ("status", "running,parked"),
            ("definition", "checkout"),
            ("version", "2"),
            ("created_after", "2026-11-23T10:00:00Z"),
            ("limit", "10000"),
        ])
        .unwrap();
        assert_eq!(filter.statuses, [SagaStatus::Running, SagaStatus::Parked]);
        assert_eq!(filter.definition.as_deref(), Some("checkout"));
        assert_eq!(filter.version, Some(2));
        assert_eq!(
            filter.created_after.unwrap().to_rfc3339(),
            "2026-11-23T10:00:00+00:00"
        );
        assert_eq!(filter.limit, 500);
        assert_eq!(parse(&[]).unwrap().limit, 50);
    }

    #[test]
    fn parked_narrows_the_statuses() {
        assert_eq!(
            parse(&[("parked", "true")]).unwrap().statuses,
            [SagaStatus::Parked]
        );
        let not_parked = parse(&[("parked", "false")]).unwrap().statuses;
        assert_eq!(not_parked.len(), SagaStatus::all().count() - 1);
        assert!(!not_parked.contains(&SagaStatus::Parked));
        let error = parse(&[("status", "running"), ("parked", "true")]).unwrap_err();
        assert_eq!(error.problem().field.as_deref(), Some("parked"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let id = Uuid::new_v4().simple();
        let too_early = format!("-300000000000000000_{id}");
        let too_late = format!("300000000000000000_{id}");
        for (query, field) in [
            (vec![("status", "sleeping")], "status"),
            (vec![("version", "0")], "version"),
            (vec![("limit", "-1")], "limit"),
            (vec![("limit", "ten")], "limit"),
            (vec![("created_before", "yesterday")], "created_before"),
            (vec![("cursor", "abc")], "cursor"),
            (vec![("parked", "yes")], "parked"),
            (vec![("definition", "")], "definition"),
            (vec![("definition", "check\0out")], "definition"),
            (vec![("step", "\0")], "step"),
            (vec![("cursor", too_early.as_str())], "cursor"),
            (vec![("cursor", too_late.as_str())], "cursor"),
            (vec![("colour", "red")], "colour"),
            (vec![("limit", "1"), ("limit", "2")], "limit"),
        ] {
            let error = parse(&query).unwrap_err();
            assert_eq!(error.status().as_u16(), 400, "{query:?}");
            assert_eq!(error.problem().field.as_deref(), Some(field), "{query:?}");
            assert!(error.problem().detail.starts_with(field), "{query:?}");
        }
    }

    #[test]
    fn a_cursor_reads_back_to_the_same_position() {
        let cursor = Cursor {
            created_at: Utc.timestamp_micros(1_795_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for year in [1, 9999] {
            let edge = Cursor {
                created_at: Utc.with_ymd_and_hms(year, 6, 1, 0, 0, 0).unwrap(),
                id: Uuid::new_v4(),
            };
            assert_eq!(Cursor::decode(&edge.encode()).unwrap(), edge, "{year}");
        }
    }
}
