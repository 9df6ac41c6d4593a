//! Durations as written in definitions: `250ms`, `10s`, `5m`, `1h`, `1d`, or combined (`1m30s`).

use thiserror::Error;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("`{0}` is empty; write a duration such as `10s`, `5m`, `250ms`")]
    Empty(String),
    #[error("`{0}` is negative; durations must be zero or more")]
    Negative(String),
    #[error("`{0}` is not a duration; write a number followed by ms, s, m, h or d (e.g. `10s`)")]
    Malformed(String),
    #[error("`{0}` is too large (more than 100 years)")]
    TooLarge(String),
}

const MAX_MS: u64 = 100 * 365 * 24 * 3_600_000;

/// Parses a duration to milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::Empty(text.to_string()));
    }
    if t.starts_with('-') {
        return Err(DurationError::Negative(text.to_string()));
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(DurationError::Malformed(text.to_string()));
        }
        let n: u64 = t[start..i]
            .parse()
            .map_err(|_| DurationError::TooLarge(text.to_string()))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &t[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(DurationError::Malformed(text.to_string())),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| v.checked_add(total))
            .filter(|v| *v <= MAX_MS)
            .ok_or_else(|| DurationError::TooLarge(text.to_string()))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert!(matches!(
            parse_duration_ms("-5s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration_ms("5"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration_ms("5 parsecs"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration_ms(""),
            Err(DurationError::Empty(_))
        ));
        assert!(matches!(
            parse_duration_ms("99999999999999999999d"),
            Err(DurationError::TooLarge(_))
        ));
    }
}
