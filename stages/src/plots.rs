//! PNG plots for the evaluation report (plotters, bitmap backend): the reliability diagram,
//! the coverage-accuracy curve and the confusion heatmap at the 2-digit (sub-major) level.
//!
//! Text needs a TrueType font: the first of `ISCO_DAG_FONT` and the usual DejaVu / Liberation
//! paths that exists is registered once. Without one the plots are skipped and the report
//! says so (its inline SVG charts and CSV tables do not need fonts).

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
    diagonal: bool,
) -> Result<(), Error> {
    let err = draw_err(path);
    let root = BitMapBackend::new(path, (640, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
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
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..1f64, y_min..1f64)
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
    if diagonal {
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
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
    let root = BitMapBackend::new(path, (side, side)).into_drawing_area();
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

/// Writes `<name>_reliability.png`, `<name>_coverage.png` and `<name>_confusion_2digit.png`
/// into `dir`; returns the file names written (none without a font).
pub fn write(dir: &Path, name: &str, e: &Evaluation) -> Result<Vec<String>, Error> {
    if !font() {
        return Ok(vec![]);
    }
    let rel = e.reliability_points();
    let files = [
        format!("{name}_reliability.png"),
        format!("{name}_coverage.png"),
        format!("{name}_confusion_2digit.png"),
    ];
    curve(
        &dir.join(&files[0]),
        "Reliability (calibrated confidence)",
        "confidence",
        &rel,
        true,
    )?;
    curve(
        &dir.join(&files[1]),
        "Coverage and accuracy, most confident first",
        "share coded automatically",
        &e.coverage_curve,
        false,
    )?;
    heatmap(&dir.join(&files[2]), e)?;
    Ok(files.to_vec())
}
