//! The evaluation report's charts, drawn once each with plotters as SVG files that scale to
//! the page's width: the reliability diagram (each bin's record count shown, its dot sized by
//! it), the coverage-accuracy curve and the confusion heatmap at the 2-digit (sub-major)
//! level.
//!
//! Laying out text needs a TrueType font: the first of `ISCO_DAG_FONT` and the usual DejaVu /
//! Liberation paths that exists is registered once. Without one the charts are skipped and
//! the report says so (its tables and CSV files do not need fonts).

use std::path::Path;
use std::sync::OnceLock;

use classifier::metrics::Evaluation;
use plotters::prelude::*;

use crate::error::Error;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a font for plotters once; returns whether one was found.
fn font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let env = std::env::var("ISCO_DAG_FONT").ok();
        for path in env.iter().map(String::as_str).chain(FONTS.iter().copied()) {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn draw_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    }
}

fn curve(
    path: &Path,
    title: &str,
    x_desc: &str,
    points: &[(f64, f64)],
    counts: Option<&[usize]>,
) -> Result<(), Error> {
    let err = draw_err(path);
    let root = SVGBackend::new(path, (640, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let diagonal = counts.is_some();
    let y_min = if diagonal {
        0.0
    } else {
        points
            .iter()
            .map(|p| p.1)
            .fold(1.0f64, f64::min)
            .clamp(0.0, 0.95)
            .mul_add(1.0, -0.02)
            .max(0.0)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        // Room above 1.0 for the reliability diagram's count labels.
        .build_cartesian_2d(0f64..1f64, y_min..if diagonal { 1.08 } else { 1.0 })
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("accuracy")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    if diagonal {
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| err(e.to_string()))?;
    if let Some(counts) = counts {
        // A bin of 3 records must not look like one of 3,000: the dot's area grows with the
        // count and the count is written beside it.
        let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
        chart
            .draw_series(points.iter().zip(counts).map(|(&p, &n)| {
                let r = 3.0 + 9.0 * (n as f64 / max).sqrt();
                EmptyElement::at(p)
                    + Circle::new((0, 0), r as i32, BLUE.mix(0.5).filled())
                    + Text::new(
                        format!("n={n}"),
                        // Left of the dot near the right edge, so the label stays inside.
                        (if p.0 > 0.8 { -52 } else { 6 }, -18),
                        ("sans-serif", 11).into_font().color(&BLACK.mix(0.7)),
                    )
            }))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn heatmap(path: &Path, e: &Evaluation) -> Result<(), Error> {
    let err = draw_err(path);
    let mut codes: Vec<&String> = e
        .confusion_2digit
        .keys()
        .flat_map(|(a, b)| [a, b])
        .collect();
    codes.sort();
    codes.dedup();
    let n = codes.len().max(1);
    let index = |c: &String| codes.binary_search(&c).unwrap_or(0);
    let mut rows = vec![0usize; n];
    for ((t, _), c) in &e.confusion_2digit {
        rows[index(t)] += c;
    }
    let side = (n * 16 + 140).clamp(420, 1000) as u32;
    let root = SVGBackend::new(path, (side, side)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let label = |v: &f64| {
        let i = v.floor() as usize;
        if (*v - v.floor() - 0.5).abs() < 1e-6 && i < codes.len() {
            codes[i].clone()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Confusion at the 2-digit level (row share)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..n as f64, 0f64..n as f64)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n * 2 + 1)
        .y_labels(n * 2 + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .x_desc("predicted")
        .y_desc("true")
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(e.confusion_2digit.iter().map(|((t, p), c)| {
            let (i, j) = (index(p) as f64, index(t) as f64);
            let share = *c as f64 / rows[index(t)].max(1) as f64;
            // White to dark blue; the diagonal reads at a glance, errors stay visible.
            let v = share.sqrt();
            let color = RGBColor(
                (255.0 * (1.0 - v)) as u8,
                (255.0 * (1.0 - 0.8 * v)) as u8,
                (255.0 * (1.0 - 0.45 * v)) as u8,
            );
            Rectangle::new([(i, j), (i + 1.0, j + 1.0)], color.filled())
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// Writes `<name>_reliability.svg`, `<name>_coverage.svg` and `<name>_confusion_2digit.svg`
/// into `dir`; returns the file names written (none without a font).
pub fn write(dir: &Path, name: &str, e: &Evaluation) -> Result<Vec<String>, Error> {
    if !font() {
        return Ok(vec![]);
    }
    let bins: Vec<&(f64, f64, usize)> = e.reliability.iter().filter(|r| r.2 > 0).collect();
    let points: Vec<(f64, f64)> = bins.iter().map(|r| (r.0, r.1)).collect();
    let counts: Vec<usize> = bins.iter().map(|r| r.2).collect();
    let files = [
        format!("{name}_reliability.svg"),
        format!("{name}_coverage.svg"),
        format!("{name}_confusion_2digit.svg"),
    ];
    curve(
        &dir.join(&files[0]),
        "Reliability (calibrated confidence)",
        "confidence",
        &points,
        Some(&counts),
    )?;
    curve(
        &dir.join(&files[1]),
        "Coverage and accuracy, most confident first",
        "share coded automatically",
        &e.coverage_curve,
        None,
    )?;
    heatmap(&dir.join(&files[2]), e)?;
    Ok(files.to_vec())
}
