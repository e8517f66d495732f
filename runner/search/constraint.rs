//! `[search] constraints`: `<metric> <= <bound>` or `<metric> >= <bound>`, the bound an
//! expression linear in `baseline` (the same metric at η = 0), e.g. `fd <= 2.0`,
//! `clap >= baseline - 0.02`, `mmd <= 1.5 * baseline + 0.01` (docs/design.md §10).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">=")]
    AtLeast,
}

/// A parsed constraint: `metric op scale · baseline + offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub metric: String,
    pub op: Op,
    pub scale: f64,
    pub offset: f64,
    /// The text as written (shown in search.json and the report).
    pub text: String,
}

impl Constraint {
    pub fn uses_baseline(&self) -> bool {
        self.scale != 0.0
    }

    /// The bound at a baseline value (`None` when the bound needs a baseline that is missing).
    pub fn bound(&self, baseline: Option<f64>) -> Option<f64> {
        if self.uses_baseline() {
            baseline.map(|b| self.scale * b + self.offset)
        } else {
            Some(self.offset)
        }
    }

    /// How far `value` is past the bound, relative to the bound's size (0 when it holds); `None`
    /// when the value or the bound is unknown, which counts as violated.
    pub fn excess(&self, value: Option<f64>, baseline: Option<f64>) -> Option<f64> {
        let (v, b) = (value?, self.bound(baseline)?);
        if !v.is_finite() || !b.is_finite() {
            return None;
        }
        let past = match self.op {
            Op::AtMost => v - b,
            Op::AtLeast => b - v,
        };
        Some(past.max(0.0) / b.abs().max(1e-6))
    }
}

/// Parses one constraint; the error says what is wrong in words a spec author can act on.
pub fn parse(text: &str) -> Result<Constraint, String> {
    let (at, op) = match (text.find("<="), text.find(">=")) {
        (Some(i), None) => (i, Op::AtMost),
        (None, Some(i)) => (i, Op::AtLeast),
        (Some(_), Some(_)) => return Err("has both `<=` and `>=`".into()),
        (None, None) => {
            return Err("needs `<=` or `>=` between a metric and its bound".into());
        }
    };
    let metric = text[..at].trim();
    if metric.is_empty() || metric.contains(char::is_whitespace) {
        return Err(format!("`{metric}` is not a metric name"));
    }
    let mut p = Parser {
        s: &text.as_bytes()[at + 2..],
        i: 0,
    };
    let (scale, offset) = p.sum()?;
    p.space();
    if p.i < p.s.len() {
        return Err(format!(
            "unexpected `{}` in the bound",
            String::from_utf8_lossy(&p.s[p.i..])
        ));
    }
    if !scale.is_finite() || !offset.is_finite() {
        return Err("the bound is not a finite number".into());
    }
    Ok(Constraint {
        metric: metric.to_string(),
        op,
        scale,
        offset,
        text: text.trim().to_string(),
    })
}

/// sum := product (('+' | '-') product)*; product := factor ('*' factor)*;
/// factor := number | `baseline` | '(' sum ')'. Values are (scale of baseline, constant).
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

type Linear = (f64, f64);

impl Parser<'_> {
    fn space(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.s.get(self.i).copied()
    }

    fn sum(&mut self) -> Result<Linear, String> {
        let mut acc = self.product()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let (a, b) = self.product()?;
            let sign = if c == b'+' { 1.0 } else { -1.0 };
            acc = (acc.0 + sign * a, acc.1 + sign * b);
        }
        Ok(acc)
    }

    fn product(&mut self) -> Result<Linear, String> {
        let mut acc = self.factor()?;
        while self.peek() == Some(b'*') {
            self.i += 1;
            let f = self.factor()?;
            acc = match (acc.0 != 0.0, f.0 != 0.0) {
                (true, true) => return Err("`baseline * baseline` is not linear".into()),
                (true, false) => (acc.0 * f.1, acc.1 * f.1),
                (false, _) => (f.0 * acc.1, f.1 * acc.1),
            };
        }
        Ok(acc)
    }

    fn factor(&mut self) -> Result<Linear, String> {
        match self.peek() {
            None => Err("the bound is missing".into()),
            Some(b'(') => {
                self.i += 1;
                let v = self.sum()?;
                if self.peek() != Some(b')') {
                    return Err("a `(` is not closed".into());
                }
                self.i += 1;
                Ok(v)
            }
            Some(b'-') => {
                self.i += 1;
                let (a, b) = self.factor()?;
                Ok((-a, -b))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
                {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"baseline" => Ok((1.0, 0.0)),
                    w => Err(format!(
                        "`{}` is not a number or `baseline`",
                        String::from_utf8_lossy(w)
                    )),
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit()
                        || matches!(self.s[self.i], b'.' | b'e' | b'E')
                        // An exponent's sign; a leading `+` (nothing before it) is not one.
                        || (self.i > start
                            && matches!(self.s[self.i], b'+' | b'-')
                            && matches!(self.s[self.i - 1], b'e' | b'E')))
                {
                    self.i += 1;
                }
                let word = String::from_utf8_lossy(&self.s[start..self.i]).to_string();
                word.parse::<f64>()
                    .map(|v| (0.0, v))
                    .map_err(|_| format!("`{word}` is not a number"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz run: a bound starting with `+` indexed before the text.
    #[test]
    fn a_leading_plus_is_an_error_and_exponent_signs_parse() {
        for bad in ["fd <= +3", "fd >= +", "fd <= (+1)", "fd <= 2 * +baseline"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("fd <= 1e+3").unwrap().offset, 1000.0);
        assert_eq!(parse("fd <= 2.5E-1").unwrap().offset, 0.25);
    }

    #[test]
    fn parses_absolute_relative_and_affine_bounds() {
        let c = parse("fd <= 2.0").unwrap();
        assert_eq!(
            (c.metric.as_str(), c.op, c.scale, c.offset),
            ("fd", Op::AtMost, 0.0, 2.0)
        );
        let c = parse("clap >= baseline - 0.02").unwrap();
        assert_eq!((c.op, c.scale, c.offset), (Op::AtLeast, 1.0, -0.02));
        let c = parse("mmd<=1.5*baseline+0.01").unwrap();
        assert_eq!((c.scale, c.offset), (1.5, 0.01));
        let c = parse("fd <= 2 * (baseline + 1e-1)").unwrap();
        assert!((c.scale - 2.0).abs() < 1e-12 && (c.offset - 0.2).abs() < 1e-12);
        let c = parse("probe_accuracy:notes:C >= 0.5").unwrap();
        assert_eq!(c.metric, "probe_accuracy:notes:C");
    }

    #[test]
    fn rejects_what_is_not_a_linear_bound() {
        for bad in [
            "fd 2",
            "fd <= ",
            "fd <= baseline * baseline",
            "fd <= 2 x",
            "fd <= clap",
            "<= 2",
            "fd <= (2",
            "fd <= 1e999",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn excess_is_zero_when_held_relative_when_not_and_none_when_unknown() {
        let c = parse("fd <= 1.5 * baseline").unwrap();
        assert_eq!(c.excess(Some(1.0), Some(1.0)), Some(0.0));
        assert!((c.excess(Some(3.0), Some(1.0)).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(c.excess(Some(1.0), None), None);
        assert_eq!(c.excess(None, Some(1.0)), None);
        assert_eq!(c.excess(Some(f64::NAN), Some(1.0)), None);
        let c = parse("clap >= 0.25").unwrap();
        assert_eq!(c.excess(Some(0.3), None), Some(0.0));
        assert!((c.excess(Some(0.2), None).unwrap() - 0.2).abs() < 1e-12);
    }
}
