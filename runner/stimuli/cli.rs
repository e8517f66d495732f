//! `rfmx stimuli SPEC` and `rfmx stimuli analyze FILES...`.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct StimuliArgs {
    /// The listening-test spec (e.g. specs/listening_test.toml)
    #[arg(required = true)]
    pub spec: Option<PathBuf>,
    /// Where `<name>/` is written
    #[arg(long, default_value = "reports")]
    pub reports: PathBuf,
    #[command(subcommand)]
    pub command: Option<StimuliCommand>,
}

#[derive(Debug, Subcommand)]
pub enum StimuliCommand {
    /// Unblind exported rating files: means, 95% CIs, Wilcoxon tests, ICC, plot, HTML summary
    Analyze {
        /// Results files exported by the rating page (CSV or JSON), e.g. reports/<name>/results/*.csv
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The private key (default: ../private/key.json from the results folder)
        #[arg(long)]
        key: Option<PathBuf>,
        /// Output folder (default: reports/<name>/analysis)
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(args: StimuliArgs) -> miette::Result<()> {
    match (args.command, args.spec) {
        (Some(StimuliCommand::Analyze { files, key, out }), _) => {
            let a = super::analyze::analyze(&files, key.as_deref(), out.as_deref())
                .map_err(|e| miette::miette!("{e}"))?;
            for w in &a.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: {} subject(s), {} ratings",
                a.name,
                a.subjects.len(),
                a.ratings
            );
            for q in &a.questions {
                println!("question {}:", q.question);
                for c in &q.conditions {
                    println!(
                        "  {:<12} mean {:6.1}  95% CI [{:.1}, {:.1}]  n={}",
                        c.condition, c.ci.mean, c.ci.ci_low, c.ci.ci_high, c.ci.n
                    );
                }
                for p in &q.pairs {
                    match p.test {
                        Some(t) => println!(
                            "  {} vs {}: diff {:+.1}, Wilcoxon ({:?}) n={} p={:.4}, Holm p={:.4}",
                            p.a,
                            p.b,
                            p.mean_difference,
                            t.method,
                            t.n,
                            t.p,
                            p.p_holm.unwrap_or(f64::NAN)
                        ),
                        None => println!("  {} vs {}: no test (no non-zero differences)", p.a, p.b),
                    }
                }
                match q.agreement {
                    Some(i) => println!(
                        "  ICC(2,1) = {:.3}, ICC(2,k) = {:.3} ({})",
                        i.icc2_1, i.icc2_k, q.agreement_note
                    ),
                    None => println!("  ICC {}", q.agreement_note),
                }
            }
            println!("wrote {}", a.out_dir.join("index.html").display());
            Ok(())
        }
        (None, Some(spec)) => {
            let s = super::spec::ListeningSpec::load(&spec).map_err(|e| e.into_report())?;
            let b = super::build::build(&s, &args.reports).map_err(|e| miette::miette!("{e}"))?;
            for w in &b.warnings {
                eprintln!("warning: {w}");
            }
            let (lo, hi) = b
                .key
                .clips
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), c| {
                    (lo.min(c.lufs), hi.max(c.lufs))
                });
            let limited = b.key.clips.iter().filter(|c| c.limited).count();
            println!(
                "{} clips ({} conditions × {} targets × {}), {} subjects: {}",
                b.key.clips.len(),
                b.key.conditions.len(),
                b.key.targets.len(),
                s.test.clips_per_cell,
                b.key.subjects.len(),
                b.dir.join("stimuli").display()
            );
            println!(
                "loudness {lo:.2}..{hi:.2} LUFS (target {}), {limited} clip(s) limited to {} dBTP",
                s.test.target_lufs, s.test.true_peak_dbtp
            );
            println!(
                "private key: {} (do not hand out); results go to {}",
                b.key_path.display(),
                b.dir.join("results").display()
            );
            Ok(())
        }
        (None, None) => Err(miette::miette!("give a spec, or `analyze FILES...`")),
    }
}

/// `rfmx check` on a listening-test spec (a top-level `[test]` table and no `[experiment]`):
/// validates it and returns the exit code; `None` for any other file (an experiment spec).
pub fn check_listening_spec(path: &std::path::Path) -> Option<u8> {
    let text = crate::fsx::read_text_limited(path, crate::fsx::TEXT_LIMIT).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    if !table.contains_key("test") || table.contains_key("experiment") {
        return None;
    }
    Some(match super::spec::ListeningSpec::load(path) {
        Ok(s) => {
            println!(
                "ok   {}: listening test `{}`, {} conditions × {} targets × {} clip(s), {} subjects",
                path.display(),
                s.test.name,
                s.conditions.len(),
                s.targets.len(),
                s.test.clips_per_cell,
                s.test.subjects
            );
            0
        }
        Err(super::StimuliError::Located(d)) => {
            eprint!("{}", d.render(100));
            2
        }
        Err(e) => {
            eprintln!("Error: {e}");
            2
        }
    })
}
