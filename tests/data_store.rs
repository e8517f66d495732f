//! Building, reopening, subsampling, determinism and spec-key errors.

use rfmx::data::{Dataset, DatasetConfig, build};

fn cfg(concept: &str, n: usize, seed: u64) -> DatasetConfig {
    let mut c = DatasetConfig::new(concept);
    c.per_class = Some(n);
    c.seed = seed;
    c.builtin_synth = true;
    c
}

#[test]
fn build_open_stratified_and_deterministic() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg("chords", 3, 5);
    let a = build(&c, &d.path().join("a"), &|_, _| {}).unwrap();
    let b = build(&c, &d.path().join("b"), &|_, _| {}).unwrap();
    assert_eq!(a.len(), 12);
    for class in ["major", "minor", "aug", "dim"] {
        let inst: std::collections::BTreeSet<_> = a
            .clips
            .iter()
            .filter(|r| r.class == class)
            .map(|r| r.program)
            .collect();
        assert_eq!(inst.len(), 3, "stratified over instruments: {class}");
    }
    let bytes = |p: &std::path::Path| std::fs::read(p.join("audio_32k.f32")).unwrap();
    assert_eq!(bytes(&d.path().join("a")), bytes(&d.path().join("b")));
    assert_eq!(
        std::fs::read(d.path().join("a/audio_44k.f32")).unwrap(),
        std::fs::read(d.path().join("b/audio_44k.f32")).unwrap()
    );
    let o = Dataset::open(&d.path().join("a")).unwrap();
    assert_eq!(o.clips, a.clips);
    assert_eq!(o.manifest.kept, 12);
    assert_eq!(o.manifest.enumerated, 13_248);
    assert_eq!(o.audio_32k(3).unwrap().len(), 128_000);
    assert_eq!(o.audio_44k(3).unwrap().len(), 2 * 176_400);
    assert!(matches!(
        o.manifest.renderer,
        rfmx::data::RendererInfo::Builtin { .. }
    ));
    c.seed = 6;
    let other = build(&c, &d.path().join("c"), &|_, _| {}).unwrap();
    assert_ne!(
        other.clips.iter().map(|r| r.index).collect::<Vec<_>>(),
        a.clips.iter().map(|r| r.index).collect::<Vec<_>>()
    );
    let _ = b;
}

#[test]
fn errors_name_the_spec_key() {
    let d = tempfile::tempdir().unwrap();
    let err = |c: DatasetConfig| build(&c, d.path(), &|_, _| {}).unwrap_err().to_string();
    assert!(err(cfg("nope", 1, 0)).contains("data.concept"));
    assert!(err(cfg("notes", 829, 0)).contains("data.per_class"));
    assert!(err(cfg("notes", 0, 0)).contains("data.per_class"));
    let mut c = cfg("notes", 1, 0);
    c.classes = Some(vec!["H#".into()]);
    assert!(err(c).contains("data.classes"));
    let mut c = cfg("notes", 1, 0);
    c.soundfont = Some("/no/such.sf2".into());
    let e = err(c);
    assert!(
        e.contains("data.soundfont") && e.contains("timgm6mb-soundfont"),
        "{e}"
    );
    assert!(!d.path().join("manifest.json").exists());
}
