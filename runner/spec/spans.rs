//! Byte spans of every key and value of the spec file, by dotted key path, so that errors found
//! after deserialisation (by figment, or by validation) can point back into the file.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone)]
pub struct SpanEntry {
    /// The key's span (absent for array elements).
    pub key: Option<Range<usize>>,
    pub value: Range<usize>,
}

#[derive(Debug, Default, Clone)]
pub struct SpanMap {
    entries: HashMap<Vec<String>, SpanEntry>,
}

impl SpanMap {
    /// Parses `text` keeping spans; a syntax error is returned as (message, span).
    pub fn parse(text: &str) -> Result<SpanMap, (String, Option<Range<usize>>)> {
        let table = DeTable::parse(text).map_err(|e| (e.message().to_string(), e.span()))?;
        let mut map = SpanMap::default();
        map.walk_table(&mut Vec::new(), table.get_ref());
        Ok(map)
    }

    fn walk_table(&mut self, path: &mut Vec<String>, table: &DeTable<'_>) {
        for (k, v) in table.iter() {
            path.push(k.get_ref().to_string());
            self.entries.insert(
                path.clone(),
                SpanEntry {
                    key: Some(k.span()),
                    value: v.span(),
                },
            );
            self.walk_value(path, v.get_ref());
            path.pop();
        }
    }

    fn walk_value(&mut self, path: &mut Vec<String>, value: &DeValue<'_>) {
        match value {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.entries.insert(
                        path.clone(),
                        SpanEntry {
                            key: None,
                            value: item.span(),
                        },
                    );
                    self.walk_value(path, item.get_ref());
                    path.pop();
                }
            }
            _ => {}
        }
    }

    pub fn get(&self, path: &[String]) -> Option<&SpanEntry> {
        self.entries.get(path)
    }

    /// The entry of the longest prefix of `path` present in the file, with that prefix's length.
    pub fn longest_prefix(&self, path: &[String]) -> Option<(usize, &SpanEntry)> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.entries.get(&path[..n]).map(|e| (n, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_nested_keys_and_array_items() {
        let text = "[steer]\neta = [0.1, -2.0]\nlayers = { strategy = \"top_k\", k = 0 }\n";
        let m = SpanMap::parse(text).unwrap();
        let p = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            &text[m.get(&p("steer.eta.1")).unwrap().value.clone()],
            "-2.0"
        );
        assert_eq!(
            &text[m.get(&p("steer.layers.k")).unwrap().key.clone().unwrap()],
            "k"
        );
        assert_eq!(m.longest_prefix(&p("steer.eta.7")).unwrap().0, 2);
        assert!(SpanMap::parse("a = ").is_err());
    }
}
