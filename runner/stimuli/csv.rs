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
    let mut records = Vec::new();
    let mut rec: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1usize;
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
                    records.push(std::mem::take(&mut rec));
                }
                any = false;
                line += 1;
            }
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err(format!("line {line}: unterminated quoted field"));
    }
    if any || !field.is_empty() {
        rec.push(field);
        records.push(rec);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_quotes_and_commas() {
        let text = row(&["a", "b,c", "say \"hi\""]) + &row(&["1", "", "x\ny"]);
        let r = parse(&text).unwrap();
        assert_eq!(r[0], vec!["a", "b,c", "say \"hi\""]);
        assert_eq!(r[1], vec!["1", "", "x\ny"]);
        assert!(parse("\"open").is_err());
    }
}
