//! The Azure Functions Invocation Trace 2021: a CSV with the header
//! `app,func,end_timestamp,duration`, one row per invocation; the
//! timestamps are seconds from the trace's start, and an invocation started
//! at `end_timestamp - duration` (clamped at 0, as rounding makes a few
//! slightly negative).
//!
//! A function is named by its `func` hash alone (unique across apps in the
//! published trace).

use super::{csv_rows, number, RowError, Trace, TraceInvocation};

const HEADER: [&str; 4] = ["app", "func", "end_timestamp", "duration"];

/// Parses the whole text of a 2021 trace file.
pub fn parse(text: &str) -> Result<Trace, RowError> {
    let mut invocations = Vec::new();
    for (line, fields) in csv_rows(text, &HEADER)? {
        if fields.len() != HEADER.len() {
            return Err(RowError { line, message: format!("{} fields where app,func,end_timestamp,duration are 4", fields.len()) });
        }
        if fields[1].is_empty() {
            return Err(RowError { line, message: "empty func".into() });
        }
        let end = number(line, "end_timestamp", fields[2])?;
        let duration = number(line, "duration", fields[3])?;
        invocations.push(TraceInvocation { start_s: (end - duration).max(0.0), function: fields[1].to_string(), duration_s: Some(duration) });
    }
    Ok(Trace { invocations })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_end_minus_duration() {
        let t = parse("app,func,end_timestamp,duration\na,f,10.5,0.5\r\n\nb,g,1,2\n").unwrap();
        assert_eq!(t.invocations.len(), 2);
        assert_eq!(t.invocations[0], TraceInvocation { start_s: 10.0, function: "f".into(), duration_s: Some(0.5) });
        assert_eq!(t.invocations[1].start_s, 0.0);
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let e = parse("app,func,end_timestamp,duration\na,f,1,0.5\na,f,x,1\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("end_timestamp"), "{e}");
        assert_eq!(parse("app,func,end_timestamp,duration\n\na,f,1\n").unwrap_err().line, 3);
        assert_eq!(parse("a,b\n").unwrap_err().line, 1);
        assert_eq!(parse("").unwrap_err().line, 1);
        assert!(parse("app,func,end_timestamp,duration\na,f,1,-1\n").unwrap_err().message.contains("duration"));
    }
}
