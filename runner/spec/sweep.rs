//! Sweep expansion: the cartesian product of the `[sweep]` axes.

use std::collections::BTreeMap;

/// One sweep point: for each axis (in key order) the key, the value's index in its list, the value.
pub type Point = Vec<(String, usize, serde_json::Value)>;

/// All points, the last axis varying fastest. No axes gives one empty point.
pub fn expand(sweep: &BTreeMap<String, Vec<serde_json::Value>>) -> Vec<Point> {
    let mut points: Vec<Point> = vec![Vec::new()];
    for (key, values) in sweep {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().enumerate().map(move |(i, v)| {
                    let mut q = p.clone();
                    q.push((key.clone(), i, v.clone()));
                    q
                })
            })
            .collect();
    }
    points
}

/// A readable label: `extract.pooling=mean,toy.offset=1` (empty without a sweep).
pub fn label(point: &Point) -> String {
    point
        .iter()
        .map(|(k, _, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A swept value as written in labels: strings bare, other values as compact JSON.
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cartesian_product_in_key_order() {
        let mut s = BTreeMap::new();
        s.insert("b.y".to_string(), vec![json!(1), json!(2), json!(3)]);
        s.insert("a.x".to_string(), vec![json!("m"), json!("n")]);
        let pts = expand(&s);
        assert_eq!(pts.len(), 6);
        assert_eq!(label(&pts[0]), "a.x=m,b.y=1");
        assert_eq!(label(&pts[5]), "a.x=n,b.y=3");
        assert_eq!(pts[4][1].1, 1);
        assert_eq!(expand(&BTreeMap::new()), vec![Vec::new()]);
    }

    #[test]
    fn an_empty_axis_gives_no_points() {
        let mut s = BTreeMap::new();
        s.insert("a".to_string(), vec![]);
        assert!(expand(&s).is_empty());
    }
}
