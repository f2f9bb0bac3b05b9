//! Output as docker prints it: sizes, ages, tables; and sizes as docker reads them.

use oci::timestamp::{format_rfc3339, now_unix, parse_rfc3339};

/// Decimal units with three significant digits, as docker's `units.HumanSizeWithPrecision(n, 3)`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{size:.digits$}");
    // %g drops trailing zeros: 4.20 → 4.2
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// docker's RAMInBytes (go-units size.go): a number, an optional k/m/g/t unit (powers of
/// 1024), optionally followed by `b` or `ib`.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let unitless = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (number, multiplier) = match unitless.chars().last()? {
        'k' => (&unitless[..unitless.len() - 1], 1u64 << 10),
        'm' => (&unitless[..unitless.len() - 1], 1 << 20),
        'g' => (&unitless[..unitless.len() - 1], 1 << 30),
        't' => (&unitless[..unitless.len() - 1], 1 << 40),
        _ => (unitless, 1),
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value * multiplier as f64) as u64)
}

/// "2 weeks ago", as docker's `units.HumanDuration`.
pub fn human_age(created: Option<&str>) -> String {
    let Some(then) = created.and_then(parse_rfc3339) else {
        return "N/A".to_string();
    };
    let secs = (now_unix() - then).max(0);
    let text = match secs {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_string(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 2 * 3600 => "About an hour".to_string(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 14 * 86_400 => format!("{} days", s / 86_400),
        s if s < 60 * 86_400 => format!("{} weeks", s / (7 * 86_400)),
        s if s < 365 * 86_400 => format!("{} months", s / (30 * 86_400)),
        s => format!("{} years", s / (365 * 86_400)),
    };
    format!("{text} ago")
}

/// Prints rows as left-aligned columns, as docker's tabwriter
/// (`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`): every cell but a row's last is padded to
/// its column's widest cell plus three spaces, and to at least ten; the last cell is not padded.
pub fn print_table(rows: &[Vec<String>]) {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let widest = rows
                .iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0);
            (widest + PADDING).max(MIN_WIDTH)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}", width = widths[c]));
            }
        }
        print_line(&line);
    }
}

/// A time as Go's `time.Time.String()` prints it in UTC, which `docker images`' `CreatedAt`
/// shows: `2023-11-14 22:13:20 +0000 UTC`.
pub fn go_time_string(created: Option<&str>) -> String {
    let unix = created.and_then(parse_rfc3339).unwrap_or(0);
    format!(
        "{} +0000 UTC",
        format_rfc3339(unix)
            .trim_end_matches('Z')
            .replacen('T', " ", 1)
    )
}

/// A time as `docker history`'s `CreatedAt` shows it: RFC 3339 to the second.
pub fn rfc3339_seconds(created: Option<&str>) -> String {
    format_rfc3339(created.and_then(parse_rfc3339).unwrap_or(0))
}

/// `println!` through [`print_line`], for every command's standard output.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print_line(&format!($($arg)*))
    };
}
pub(crate) use outln;

/// Prints one line (or several) of a command's output. A reader that went away (`rbuild images | head -1`) ends the
/// listing quietly, as docker's output ends, instead of a panic.
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("rbuild: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// Prints rows (JSON objects with docker's field names) as a `--format` flag asks, as docker's
/// formatter does: `table` is `default_table`; `json` one object a line; `table TEMPLATE` a
/// header (the template over `titles`: field name → column title), then a line per row, cells
/// split at tabs and aligned; any other value is a Go template for each row (go_template.rs).
pub fn print_rows(
    format: &str,
    default_table: &str,
    titles: &[(&str, &str)],
    rows: &[serde_json::Value],
) -> anyhow::Result<()> {
    let format = match format {
        "table" => default_table,
        "json" => "{{json .}}",
        other => other,
    };
    // As docker's `Format.IsTable`: any format that starts with `table`, space or not.
    let (table, source) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_matches(' ')),
        None => (false, format),
    };
    // Written `\t` in a shell's single quotes, as docker's docs show them.
    let source = source.replace("\\t", "\t");
    let template = crate::go_template::Template::parse(&source)?;
    let render = |value: &serde_json::Value| template.render(value);
    if !table {
        for row in rows {
            print_line(&render(row)?);
        }
        return Ok(());
    }
    let header: serde_json::Map<String, serde_json::Value> = titles
        .iter()
        .map(|(field, title)| (field.to_string(), title.to_string().into()))
        .collect();
    let mut lines = vec![render(&header.into())?];
    for row in rows {
        lines.push(render(row)?);
    }
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect();
    print_table(&cells);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("64MB"), Some(64 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("512k"), Some(512 << 10));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes(""), None);
    }

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(4_200_000), "4.2MB");
        assert_eq!(human_size(77_800_000), "77.8MB");
        assert_eq!(human_size(1_230_000_000), "1.23GB");
    }

    #[test]
    fn times_as_docker_prints_them() {
        let created = Some("2023-11-14T22:13:20.123456789Z");
        assert_eq!(go_time_string(created), "2023-11-14 22:13:20 +0000 UTC");
        assert_eq!(rfc3339_seconds(created), "2023-11-14T22:13:20Z");
        assert_eq!(go_time_string(None), "1970-01-01 00:00:00 +0000 UTC");
    }
}
