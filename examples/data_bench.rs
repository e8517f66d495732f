//! Rendering throughput: `cargo run --release --example data_bench -- CONCEPT [PER_CLASS]`.
//! Renders (SoundFont if installed) + resamples without writing, and prints clips/s.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut cfg = rfmx::data::DatasetConfig::new(args.get(1).map_or("notes", |s| s.as_str()));
    cfg.per_class = args.get(2).map(|s| s.parse().expect("per_class"));
    let r = cfg.renderer().expect("renderer");
    let t = std::time::Instant::now();
    let mut n = 0usize;
    let (_, _, rendered, silent, _) =
        rfmx::data::store::render_selected(&cfg, &r, &|_, _| {}, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .expect("render");
    let s = t.elapsed().as_secs_f64();
    println!(
        "{} {:?}: rendered {rendered}, silent {silent}, kept {n} in {s:.1} s = {:.1} clips/s on {} threads",
        cfg.concept,
        r.info(),
        rendered as f64 / s,
        rayon::current_num_threads()
    );
}
