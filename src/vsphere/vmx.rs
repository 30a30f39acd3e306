//! The `.vmx` file: a VM's configuration as the host keeps it, one
//! `key = "value"` per line. Keys are case-insensitive (the host reads
//! `displayName` and `displayname` alike); values are quoted.

/// Every `key = "value"` line of `text`, key and value trimmed and the
/// value's quotes taken off, in line order.
pub fn entries(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once('=')?;
        Some((k.trim(), v.trim().trim_matches('"')))
    })
}

/// The value of `key` in `text`, the first when it is there twice.
pub fn value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    entries(text).find_map(|(k, v)| k.eq_ignore_ascii_case(key).then_some(v))
}

/// `text` with `key` set to `value`: its line replaced where it is, or
/// added at the end.
pub fn with_value(text: &str, key: &str, value: &str) -> String {
    let line = format!("{key} = \"{value}\"");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, _)) if !found && k.trim().eq_ignore_ascii_case(key) => {
                found = true;
                line.clone()
            }
            _ => l.to_string(),
        })
        .collect();
    if !found {
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// The .vmx `guestOS` value of a vSphere API guest identifier
/// (`VirtualMachineGuestOsIdentifier`), by the pattern the two names share:
/// lower case, without `Guest`, a trailing `64` or `_64` written `-64`
/// (`windows2019srv_64Guest` is `windows2019srv-64`, `other5xLinux64Guest`
/// `other5xlinux-64`, `otherGuest64` `other-64`; hosts read `guestOS`
/// case-insensitively).
pub fn guest_os_of_id(id: &str) -> String {
    let (stem, wide) = match id.strip_suffix("Guest64") {
        Some(stem) => (stem, true),
        None => (id.strip_suffix("Guest").unwrap_or(id), false),
    };
    let stem = stem.to_ascii_lowercase();
    if wide {
        return format!("{stem}-64");
    }
    match stem.strip_suffix("_64").or_else(|| stem.strip_suffix("64")) {
        Some(base) if !base.is_empty() => format!("{base}-64"),
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_case_insensitively_and_values_unquoted() {
        let text = "displayName = \"db01\"\nnvram=\"db01.nvram\"\n# comment\n";
        assert_eq!(value(text, "displayname"), Some("db01"));
        assert_eq!(value(text, "NVRAM"), Some("db01.nvram"));
        assert_eq!(value(text, "uuid.bios"), None);
        assert_eq!(entries(text).count(), 2);
        let set = with_value(text, "NVRAM", "x.nvram");
        assert_eq!(value(&set, "nvram"), Some("x.nvram"));
        assert_eq!(entries(&set).count(), 2);
        assert_eq!(
            value(&with_value(text, "uuid.bios", "42"), "uuid.bios"),
            Some("42")
        );
    }
}
