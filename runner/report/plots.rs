//! Line charts with plotters: SVG for the report, PNG (bitmap backend) on request.
//!
//! Colour-blind-safe Okabe–Ito palette, a marker shape per series on top of its colour, axis labels
//! with units, 95 % CI error bars, and the legend drawn below the plot area (one row per two series)
//! so that it never covers data, however many settings there are.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Okabe & Ito (2008), without yellow (too light on white).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
];

/// How series `i` looks, in words (for the HTML legend that repeats the plot's full labels).
pub fn style_name(i: usize) -> String {
    const COLOURS: [&str; 7] = [
        "blue",
        "orange",
        "bluish green",
        "vermillion",
        "reddish purple",
        "sky blue",
        "black",
    ];
    const SHAPES: [&str; 3] = ["circles", "triangles", "squares"];
    format!(
        "{} {}",
        COLOURS[i % COLOURS.len()],
        SHAPES[(i / COLOURS.len()) % SHAPES.len()]
    )
}

/// The same palette as CSS hex colours (the HTML legends and the confusion matrix use it).
pub fn palette_hex(i: usize) -> String {
    let c = PALETTE[i % PALETTE.len()];
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

const WIDTH: u32 = 800;
const CHART_HEIGHT: u32 = 420;
const LEGEND_ROW: u32 = 24;
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot draw {name}: {message}")]
    Draw { name: String, message: String },
    #[error("cannot write {path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A point: (x, y, optional 95 % CI (low, high)).
pub type Point = (f64, f64, Option<(f64, f64)>);

/// One line: points (x, y, optional 95 % CI).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

/// A chart: title, axis labels (with units), series, and optional shaded x positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// x positions to shade (e.g. the layers selected for steering) and the legend text for them.
    pub marks: Vec<f64>,
    pub marks_label: String,
    /// Fixed y range (e.g. [0, 1] for accuracies); else from the data.
    pub y_range: Option<(f64, f64)>,
    /// Only integer x labels (layers, steps).
    pub integer_x: bool,
}

fn register_font() {
    static ONCE: OnceLock<bool> = OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
}

fn legend_rows(chart: &Chart) -> u32 {
    let entries = chart.series.len() + usize::from(!chart.marks.is_empty());
    entries.div_ceil(2) as u32
}

/// Total pixel size of a chart.
pub fn size(chart: &Chart) -> (u32, u32) {
    (WIDTH, CHART_HEIGHT + legend_rows(chart) * LEGEND_ROW + 12)
}

fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let d = if lo.abs() > 1e-9 { lo.abs() * 0.1 } else { 0.5 };
        return (lo - d, hi + d);
    }
    let p = (hi - lo) * pad;
    (lo - p, hi + p)
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn fmt_tick(x: f64, integer: bool) -> String {
    if integer {
        if (x - x.round()).abs() > 1e-9 {
            String::new()
        } else {
            format!("{}", x.round() as i64)
        }
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Series `i`'s markers at `pts` (data or pixel coordinates of `area`): colour by `i`, shape by
/// `i / 7`, so that more series than colours stay distinguishable (and identical in the legend).
fn draw_markers<DB: DrawingBackend, CT: plotters::coord::CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    i: usize,
    pts: &[CT::From],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    CT::From: Clone,
{
    let c = PALETTE[i % PALETTE.len()];
    let r = 5;
    for p in pts {
        let at = EmptyElement::at(p.clone());
        match (i / PALETTE.len()) % 3 {
            0 => area.draw(&(at + Circle::new((0, 0), r, c.filled())))?,
            1 => area.draw(&(at + TriangleMarker::new((0, 0), r + 1, c.filled())))?,
            _ => area.draw(&(at + Rectangle::new([(1 - r, 1 - r), (r - 1, r - 1)], c.filled())))?,
        }
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (top, legend) = root.split_vertically(CHART_HEIGHT);
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(chart.marks.iter().copied());
    let (mut x0, mut x1) = range(xs, 0.06);
    if chart.integer_x {
        x0 = x0.min(x0.round() - 0.5);
        x1 = x1.max(x1.round() + 0.5);
    }
    let (y0, y1) = chart.y_range.unwrap_or_else(|| {
        range(
            chart.series.iter().flat_map(|s| {
                s.points.iter().flat_map(|&(_, y, ci)| {
                    [Some(y), ci.map(|c| c.0), ci.map(|c| c.1)]
                        .into_iter()
                        .flatten()
                })
            }),
            0.1,
        )
    });
    let distinct_x = {
        let mut v: Vec<i64> = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| (p.0 * 1e6).round() as i64))
            .collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let mut cc = ChartBuilder::on(&top)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let integer = chart.integer_x;
    let x_fmt = move |x: &f64| fmt_tick(*x, integer);
    let y_fmt = |y: &f64| fmt_tick(*y, false);
    cc.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(distinct_x.clamp(2, 10))
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(e)?;
    let shade = RGBColor(200, 200, 200).mix(0.45);
    cc.draw_series(
        chart
            .marks
            .iter()
            .map(|&m| Rectangle::new([(m - 0.4, y0), (m + 0.4, y1)], shade.filled())),
    )
    .map_err(e)?;
    for (i, s) in chart.series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let mut pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        cc.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(e)?;
        cc.draw_series(s.points.iter().filter_map(|&(x, y, ci)| {
            ci.map(|(lo, hi)| ErrorBar::new_vertical(x, lo, y, hi, c.stroke_width(2), 10))
        }))
        .map_err(e)?;
        draw_markers(cc.plotting_area(), i, &marker_points(&pts)).map_err(e)?;
    }
    let mut entries: Vec<(Option<usize>, String)> = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| (Some(i), s.label.clone()))
        .collect();
    if !chart.marks.is_empty() {
        entries.push((None, chart.marks_label.clone()));
    }
    draw_legend(&legend, &entries, WIDTH).map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Where a series shows its markers: every point, or on long series (per-step traces) about a
/// dozen evenly spaced ones, so that the shape named in the legend is on every line.
fn marker_points(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if pts.len() <= 40 {
        return pts.to_vec();
    }
    let every = pts.len().div_ceil(12);
    pts.iter().step_by(every).copied().collect()
}

/// Legend entries (series index, or `None` for the shading) in two columns.
fn draw_legend<DB: DrawingBackend>(
    legend: &DrawingArea<DB, Shift>,
    entries: &[(Option<usize>, String)],
    width: u32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let shade = RGBColor(200, 200, 200).mix(0.45);
    let col_w = (width as i32 - 40) / 2;
    let chars = ((col_w - 50) * 2 / 15).max(10) as usize;
    for (j, (i, text)) in entries.iter().enumerate() {
        let x = 30 + (j as i32 % 2) * col_w;
        let y = 6 + (j as i32 / 2) * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
        match i {
            Some(i) => {
                let c = PALETTE[i % PALETTE.len()];
                legend.draw(&PathElement::new(
                    vec![(x, y), (x + 34, y)],
                    c.stroke_width(2),
                ))?;
                draw_markers(legend, *i, &[(x + 17, y)])?;
            }
            None => {
                legend.draw(&Rectangle::new(
                    [(x + 8, y - 8), (x + 26, y + 8)],
                    shade.filled(),
                ))?;
            }
        }
        legend.draw(&Text::new(
            short(text, chars),
            (x + 44, y - 8),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

/// One panel of a [`Grid`]: its title, its series as (style index, points), shaded x positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub series: Vec<(usize, Vec<Point>)>,
    pub marks: Vec<f64>,
}

/// Small multiples: panels on shared axes, one legend for the figure. Series `i` has the same
/// style (and legend entry `labels[i]`) in every panel, so a figure never reuses a style as long
/// as it has at most [`STYLES`] labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub labels: Vec<String>,
    pub panels: Vec<Panel>,
    /// Legend text of the shading (when any panel has marks).
    pub marks_label: String,
    pub y_range: Option<(f64, f64)>,
    pub integer_x: bool,
}

/// Distinct series styles: colours × marker shapes.
pub const STYLES: usize = PALETTE.len() * 3;

const GRID_WIDTH: u32 = 1120;
const PANEL_HEIGHT: u32 = 230;
const GRID_TITLE: u32 = 40;

impl Grid {
    fn columns(&self) -> usize {
        self.panels.len().clamp(1, 4)
    }

    fn legend_entries(&self) -> Vec<(Option<usize>, String)> {
        let mut entries: Vec<(Option<usize>, String)> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (Some(i), l.clone()))
            .collect();
        if self.panels.iter().any(|p| !p.marks.is_empty()) {
            entries.push((None, self.marks_label.clone()));
        }
        entries
    }

    /// Total pixel size.
    pub fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.columns()) as u32;
        let legend = self.legend_entries().len().div_ceil(2) as u32;
        (
            GRID_WIDTH,
            GRID_TITLE + rows * PANEL_HEIGHT + legend * LEGEND_ROW + 12,
        )
    }
}

fn draw_grid<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, grid: &Grid) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let cols = grid.columns();
    let rows = grid.panels.len().div_ceil(cols);
    let (title, rest) = root.split_vertically(GRID_TITLE);
    let (body, legend) = rest.split_vertically(rows as u32 * PANEL_HEIGHT);
    title
        .draw(&Text::new(
            grid.title.clone(),
            (14, 8),
            ("sans-serif", 22).into_font().color(&BLACK),
        ))
        .map_err(e)?;
    let all = || grid.panels.iter().flat_map(|p| p.series.iter());
    let xs = all()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .chain(grid.panels.iter().flat_map(|p| p.marks.iter().copied()));
    let (mut x0, mut x1) = range(xs, 0.06);
    if grid.integer_x {
        x0 = x0.min(x0.round() - 0.5);
        x1 = x1.max(x1.round() + 0.5);
    }
    let (y0, y1) = grid.y_range.unwrap_or_else(|| {
        range(
            all().flat_map(|s| {
                s.1.iter().flat_map(|&(_, y, ci)| {
                    [Some(y), ci.map(|c| c.0), ci.map(|c| c.1)]
                        .into_iter()
                        .flatten()
                })
            }),
            0.1,
        )
    });
    let integer = grid.integer_x;
    let x_fmt = move |x: &f64| fmt_tick(*x, integer);
    let y_fmt = |y: &f64| fmt_tick(*y, false);
    let shade = RGBColor(200, 200, 200).mix(0.45);
    for (k, area) in body.split_evenly((rows, cols)).into_iter().enumerate() {
        let Some(panel) = grid.panels.get(k) else {
            continue;
        };
        let first_col = k % cols == 0;
        let last_row = k / cols == rows - 1 || k + cols >= grid.panels.len();
        let mut cc = ChartBuilder::on(&area)
            .caption(short(&panel.title, 34), ("sans-serif", 16))
            .margin(6)
            .x_label_area_size(if last_row { 40 } else { 22 })
            .y_label_area_size(if first_col { 58 } else { 40 })
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(e)?;
        let mut mesh = cc.configure_mesh();
        mesh.x_labels(5)
            .y_labels(4)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 13))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225));
        if last_row {
            mesh.x_desc(grid.x_label.as_str());
        }
        if first_col {
            mesh.y_desc(grid.y_label.as_str());
        }
        mesh.draw().map_err(e)?;
        cc.draw_series(
            panel
                .marks
                .iter()
                .map(|&m| Rectangle::new([(m - 0.4, y0), (m + 0.4, y1)], shade.filled())),
        )
        .map_err(e)?;
        for (i, points) in &panel.series {
            let c = PALETTE[i % PALETTE.len()];
            let mut pts: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            cc.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(e)?;
            cc.draw_series(points.iter().filter_map(|&(x, y, ci)| {
                ci.map(|(lo, hi)| ErrorBar::new_vertical(x, lo, y, hi, c.stroke_width(1), 6))
            }))
            .map_err(e)?;
            draw_markers(cc.plotting_area(), *i, &marker_points(&pts)).map_err(e)?;
        }
    }
    draw_legend(&legend, &grid.legend_entries(), GRID_WIDTH).map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// The small multiples as an SVG document.
pub fn grid_svg(grid: &Grid) -> Result<String, PlotError> {
    register_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, grid.size()).into_drawing_area();
        draw_grid(root, grid).map_err(|message| PlotError::Draw {
            name: grid.title.clone(),
            message,
        })?;
    }
    Ok(out)
}

/// Writes `<stem>.svg` (and `<stem>.png` when `png`) of small multiples; returns the names.
pub fn write_grid(
    grid: &Grid,
    dir: &Path,
    stem: &str,
    png: bool,
) -> Result<Vec<String>, PlotError> {
    write_files(
        dir,
        stem,
        png,
        &grid.title,
        grid_svg(grid)?,
        grid.size(),
        |root| draw_grid(root, grid),
    )
}

/// Writes an SVG document and, when `png`, draws the same figure into `<stem>.png`.
fn write_files(
    dir: &Path,
    stem: &str,
    png: bool,
    title: &str,
    svg: String,
    size: (u32, u32),
    draw: impl Fn(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<Vec<String>, PlotError> {
    let mut names = vec![format!("{stem}.svg")];
    let path = dir.join(&names[0]);
    crate::fsx::write_atomic(&path, svg.as_bytes()).map_err(|source| PlotError::Write {
        path: path.display().to_string(),
        source,
    })?;
    if png {
        let name = format!("{stem}.png");
        let path = dir.join(&name);
        let tmp = crate::fsx::temp_sibling(&path).with_extension("png");
        draw(BitMapBackend::new(&tmp, size).into_drawing_area()).map_err(|message| {
            PlotError::Draw {
                name: title.to_string(),
                message,
            }
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| PlotError::Write {
            path: path.display().to_string(),
            source,
        })?;
        names.push(name);
    }
    Ok(names)
}

/// The chart as an SVG document.
pub fn svg(chart: &Chart) -> Result<String, PlotError> {
    register_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size(chart)).into_drawing_area();
        draw(root, chart).map_err(|message| PlotError::Draw {
            name: chart.title.clone(),
            message,
        })?;
    }
    Ok(out)
}

/// Writes `<stem>.svg` (and `<stem>.png` when `png`) into `dir`; returns the file names written.
pub fn write(chart: &Chart, dir: &Path, stem: &str, png: bool) -> Result<Vec<String>, PlotError> {
    write_files(
        dir,
        stem,
        png,
        &chart.title,
        svg(chart)?,
        size(chart),
        |root| draw(root, chart),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(n: usize) -> Chart {
        Chart {
            title: "accuracy <vs> η".into(),
            x_label: "η (unitless)".into(),
            y_label: "accuracy (fraction)".into(),
            series: (0..n)
                .map(|i| Series {
                    label: format!(
                        "schedule {i} & <b> · linear_down · layers top_k(k=2) · gate 0.5"
                    ),
                    points: (0..12)
                        .map(|k| {
                            let x = k as f64 * 0.05;
                            (x, x + i as f64 * 0.01, Some((x - 0.02, x + 0.03)))
                        })
                        .collect(),
                })
                .collect(),
            marks: vec![0.1],
            marks_label: "selected".into(),
            y_range: None,
            integer_x: false,
        }
    }

    #[test]
    fn svg_has_every_series_escaped_labels_and_grows_with_the_legend() {
        let s = svg(&chart(12)).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..50]);
        assert!(s.contains("schedule 11 &amp; &lt;b&gt;"));
        assert!(!s.contains("<b>"));
        assert!(s.contains("η (unitless)"));
        // 12 series + the shading entry: 7 legend rows.
        assert_eq!(size(&chart(12)).1, CHART_HEIGHT + 7 * LEGEND_ROW + 12);
        assert!(size(&chart(1)).1 < size(&chart(12)).1);
    }

    #[test]
    fn png_is_written_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let names = write(&chart(2), dir.path(), "c", true).unwrap();
        assert_eq!(names, vec!["c.svg", "c.png"]);
        let png = std::fs::read(dir.path().join("c.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// `<text ...>content</text>` of an SVG: (x, y, anchor, font size, content).
    fn texts(svg: &str) -> Vec<(f64, f64, String, f64, String)> {
        let attr = |tag: &str, name: &str| -> String {
            tag.split(&format!(" {name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        svg.split("<text")
            .skip(1)
            .map(|t| {
                let (tag, rest) = t.split_once('>').unwrap();
                let content = rest.split("</text>").next().unwrap().trim().to_string();
                (
                    attr(tag, "x").parse().unwrap(),
                    attr(tag, "y").parse().unwrap(),
                    attr(tag, "text-anchor"),
                    attr(tag, "font-size").parse().unwrap(),
                    content,
                )
            })
            .collect()
    }

    #[test]
    fn labels_do_not_overlap_at_12_sweep_points() {
        // 12 series (one per schedule/cropping) × 12 η values.
        let s = svg(&chart(12)).unwrap();
        let t = texts(&s);
        // x tick labels: centred numbers on one baseline, at most 10, spaced wider than they are.
        let bottom = t
            .iter()
            .filter(|x| x.2 == "middle" && x.4.parse::<f64>().is_ok())
            .map(|x| x.1)
            .fold(0.0, f64::max);
        let mut ticks: Vec<_> = t
            .iter()
            .filter(|x| x.1 == bottom && x.2 == "middle")
            .collect();
        ticks.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!((2..=10).contains(&ticks.len()), "{ticks:?}");
        for w in ticks.windows(2) {
            let width = 0.65 * w[0].3 * (w[0].4.chars().count().max(w[1].4.chars().count()) as f64);
            assert!(w[1].0 - w[0].0 > width + 4.0, "{w:?}");
        }
        // Legend entries (left-anchored, below the plot): two per row, each fits its column.
        let legend: Vec<_> = t
            .iter()
            .filter(|x| x.2 == "start" && x.1 > CHART_HEIGHT as f64)
            .collect();
        assert_eq!(legend.len(), 13);
        let col = (WIDTH as f64 - 40.0) / 2.0;
        for e in &legend {
            let shown =
                e.4.replace("&amp;", "&")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">");
            let width = 0.58 * e.3 * shown.chars().count() as f64;
            let right = if e.0 < col { 30.0 + col } else { WIDTH as f64 };
            assert!(
                e.0 + width < right + 30.0,
                "legend entry overflows its column: {e:?}"
            );
        }
        let mut rows: Vec<i64> = legend.iter().map(|e| e.1 as i64).collect();
        rows.dedup();
        assert_eq!(rows.len(), 7);
        assert!(rows.windows(2).all(|r| r[1] - r[0] >= LEGEND_ROW as i64));
    }

    #[test]
    fn integer_ticks_hide_fractions() {
        assert_eq!(fmt_tick(2.0, true), "2");
        assert_eq!(fmt_tick(2.5, true), "");
        assert_eq!(fmt_tick(0.456, false), "0.46");
    }
}
