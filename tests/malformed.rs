//! The malformed-spec corpus: every file in tests/malformed/ must be rejected with a diagnostic
//! naming the line given in its first line (`# expect-line: N`); the rendered messages are
//! snapshotted (no colour, fixed width). The parser never panics on mutated or random input.

use std::path::Path;

use proptest::prelude::*;

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/malformed exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

fn expected_line(text: &str) -> usize {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect-line: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("first line is `# expect-line: N`")
}

#[test]
fn corpus_has_at_least_50_specs() {
    assert!(corpus().len() >= 50, "{} specs", corpus().len());
}

#[test]
fn every_malformed_spec_is_rejected_at_the_right_line() {
    let mut wrong = Vec::new();
    for (name, text) in corpus() {
        let file = format!("{name}.toml");
        match rfmx::spec::load_str(&file, &name, &text, &[], &[]) {
            Ok(_) => wrong.push(format!("{name}: accepted")),
            Err(e) => {
                let want = expected_line(&text);
                let rendered = e.render(rfmx::commands::RENDER_WIDTH);
                if !e.lines().contains(&want) {
                    wrong.push(format!(
                        "{name}: expected line {want}, got {:?}\n{rendered}",
                        e.lines()
                    ));
                }
                // The rendered report names file:line:col.
                if !rendered.contains(&format!("[{file}:{want}:")) {
                    wrong.push(format!(
                        "{name}: rendering lacks [{file}:{want}:...]\n{rendered}"
                    ));
                }
                insta::assert_snapshot!(name, rendered);
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const VALID: &str = r#"
[experiment]
name = "prop"
seed = 3

[model]
name = "tiny"

[data]
concepts = ["notes", "chords"]
per_class = 8

[steer]
targets = ["notes:C", "notes:E + chords:major"]
layers = { strategy = "top_k", k = 4 }
schedule = ["constant", { kind = "piecewise", points = [[0.0, 0.0], [1.0, 1.0]] }]
eta = [0.1, 0.2]
gate = 0.5

[toy]
values = [1, 2]

[sweep]
"extract.pooling" = ["mean", "last"]
"#;

#[test]
fn the_proptest_seed_spec_is_valid() {
    let s = rfmx::spec::load_str("valid.toml", "valid", VALID, &[], &[]).unwrap();
    assert_eq!(s.points.len(), 2);
}

fn check_no_panic(text: &str) {
    if let Err(e) = rfmx::spec::load_str("fuzz.toml", "fuzz", text, &[], &[]) {
        let _ = e.render(80);
        let _ = e.lines();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_specs_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..6)) {
        let mut chars: Vec<char> = VALID.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => { chars.remove(i); }
                _ if i < chars.len() => chars[i] = c,
                _ => chars.push(c),
            }
        }
        check_no_panic(&chars.into_iter().collect::<String>());
    }

    #[test]
    fn mutated_values_never_panic(line in 1usize..25, value in "[-+a-z0-9_.\"\\[\\]{}=:, ]{0,24}") {
        let text: String = VALID
            .lines()
            .enumerate()
            .map(|(i, l)| if i == line { match l.split_once('=') { Some((k, _)) => format!("{k}= {value}"), None => l.to_string() } } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n");
        check_no_panic(&text);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_no_panic(&String::from_utf8_lossy(&bytes));
    }
}
