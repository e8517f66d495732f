//! The one rule for a concept's judge layer and the one Table-1 row built on it, shared by the
//! directions node (which judge evaluation uses), the summary printed after `rfmx run` and the
//! HTML report, so that they can never disagree.

use super::probe::ProbeScores;

/// The layer whose multiclass probe judges a concept: the best validation accuracy; ties go to the
/// better validation AUC, then to the lower layer. Layers without a validation accuracy rank last.
pub fn judge_layer<'a, I>(layers: I) -> Option<&'a ProbeScores>
where
    I: IntoIterator<Item = &'a ProbeScores>,
{
    let key = |s: &ProbeScores| {
        (
            s.multiclass.val_acc.unwrap_or(f64::NEG_INFINITY),
            s.multiclass.val_auc.unwrap_or(f64::NEG_INFINITY),
        )
    };
    layers.into_iter().max_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(b.layer.cmp(&a.layer))
    })
}

/// One row of the paper's Table 1 for (concept, pooling, probe kind): the judge at its layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Table1Row {
    pub concept: String,
    pub pooling: String,
    pub kind: String,
    /// Layers probed.
    pub layers: usize,
    pub judge_layer: usize,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    /// Mean one-vs-rest test AUC at the judge layer.
    pub mean_test_auc: Option<f64>,
    /// Tempos: the regression probe's test R² at the judge layer.
    pub test_r2: Option<f64>,
}

/// The Table-1 row of one (concept, pooling, kind) group of probe nodes (None without layers).
pub fn table1_row(pooling: &str, layers: &[ProbeScores]) -> Option<Table1Row> {
    let j = judge_layer(layers)?;
    Some(Table1Row {
        concept: j.concept.clone(),
        pooling: pooling.to_string(),
        kind: serde_json::to_value(j.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        layers: layers.len(),
        judge_layer: j.layer,
        val_acc: j.multiclass.val_acc,
        test_acc: j.multiclass.test_acc,
        mean_test_auc: j.mean_class_auc(true),
        test_r2: j.regression.as_ref().and_then(|r| r.test_r2),
    })
}
