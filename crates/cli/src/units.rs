//! Human units on the command line: durations like `30s` and sizes like `10G`.

use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 10m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4096, 512M or 10G"))?;
    let mult: u64 = match unit.trim_end_matches(['i', 'B']) {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `HOST:PORT` or `IP:PORT`: checked for form here, resolved when used.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    tessera_sdk::check_host_port(s).map(|()| s.to_string())
}

/// One meta endpoint, or several separated by commas (a meta group).
pub fn parse_meta_endpoints(s: &str) -> Result<String, String> {
    let all: Vec<&str> = s.split(',').map(str::trim).collect();
    for e in &all {
        tessera_sdk::check_host_port(e)?;
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = all.iter().find(|e| !seen.insert(**e)) {
        return Err(format!("{twice} is named twice"));
    }
    Ok(all.join(","))
}

pub use tessera_admin::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("1Q").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert!(parse_host_port("meta.example.com:7700").is_ok());
        assert!(parse_host_port("10.0.0.1:7700").is_ok());
        assert!(parse_host_port("[::1]:7700").is_ok());
        assert!(parse_host_port("meta.example.com").is_err());
        assert!(parse_host_port("host:99999").is_err());
    }
}
