//! Colour for a terminal: ANSI codes around a word, and an action's
//! symbol coloured by what the action does. Whether to colour is the
//! caller's to say (a terminal, `NO_COLOR`, `--color`).

/// `text` in an ANSI colour when `on`.
pub fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// An action's line with its symbol coloured by what it does: `+` backups
/// green, `-` removals yellow, `!` alerts bold red, `>` copies cyan, `?`
/// drills blue, `~` repairs magenta.
pub fn paint_action(on: bool, line: &str) -> String {
    let code = match line.chars().next() {
        Some('+') => "32",
        Some('-') => "33",
        Some('!') => "1;31",
        Some('>') => "36",
        Some('?') => "34",
        Some('~') => "35",
        _ => return line.to_string(),
    };
    let (symbol, rest) = line.split_at(1);
    format!("{}{rest}", paint(on, code, symbol))
}
