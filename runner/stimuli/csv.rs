//! Minimal RFC 4180 CSV: quoted fields with doubled quotes, CRLF or LF line ends.

/// One CSV line (with the trailing newline).
pub fn row(fields: &[&str]) -> String {
    let mut s = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            s.push('"');
            s.push_str(&f.replace('"', "\"\""));
            s.push('"');
        } else {
            s.push_str(f);
        }
    }
    s.push('\n');
    s
}

/// Parses a whole file into records (blank lines skipped). Errors name the 1-based line.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    parse_with_lines(text)
        .map(|rs| rs.into_iter().map(|(_, r)| r).collect())
        .map_err(|(line, e)| format!("line {line}: {e}"))
}

/// A record: the 1-based line it starts on, and its fields.
pub type Record = (usize, Vec<String>);

/// [`parse`], keeping the 1-based line each record starts on (for messages naming a row's line,
/// e.g. a folder dataset's labels CSV); errors are (line, reason).
pub fn parse_with_lines(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut records = Vec::new();
    let mut rec: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let (mut line, mut start) = (1usize, 1usize);
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                any = true;
            }
            ',' => {
                rec.push(std::mem::take(&mut field));
                any = true;
            }
            '\r' => {}
            '\n' => {
                if any || !field.is_empty() {
                    rec.push(std::mem::take(&mut field));
                    records.push((start, std::mem::take(&mut rec)));
                }
                any = false;
                line += 1;
                start = line;
            }
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err((line, "unterminated quoted field".into()));
    }
    if any || !field.is_empty() {
        rec.push(field);
        records.push((start, rec));
    }
    Ok(records)
}
