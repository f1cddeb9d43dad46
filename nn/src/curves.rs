//! A `History`'s curves as files: CSV (Keras's `CSVLogger` columns) and a PNG of the loss and
//! accuracy per epoch, training beside validation (drawn with `plotters`, encoded with `png`,
//! written atomically). Text needs a TrueType font from the system (DejaVu Sans or Liberation
//! Sans where Debian, Fedora and Arch put them, else the first `.ttf` under
//! `/usr/share/fonts`); without one the PNG is an error naming where it looked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::{Error, Result};
use crate::logs::{EpochLogs, History};

const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
const FONT_DIR: &str = "/usr/share/fonts";

/// The size of the PNG.
const SIZE: (u32, u32) = (1000, 420);

impl History {
    /// The curves as CSV: `epoch` and then, in Keras's order, the quantities measured
    /// (`accuracy`, `learning_rate`, `loss`, `val_accuracy`, `val_loss`), one row per epoch.
    pub fn to_csv(&self) -> String {
        let columns = self.epochs.first().map_or(vec![], |e| e.csv_columns());
        let mut text = String::new();
        EpochLogs::write_csv_header(&columns, ',', &mut text);
        for e in &self.epochs {
            e.write_csv_row(&columns, ',', &mut text);
        }
        text
    }

    /// Writes [`History::to_csv`] to `path` (atomically).
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_atomically(path.as_ref(), self.to_csv().as_bytes())
    }

    /// Draws the loss (left) and, when measured, the accuracy (right) per epoch, training and
    /// validation, as a PNG at `path` (written atomically). An empty history is an error.
    pub fn plot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let fail = |reason: String| Error::Plot {
            path: path.to_path_buf(),
            reason,
        };
        if self.epochs.is_empty() {
            return Err(fail("the history has no epochs to draw".into()));
        }
        font().map_err(fail)?;
        let (w, h) = SIZE;
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        draw(self, &mut rgb).map_err(|e| fail(e.to_string()))?;
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, w, h);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder
                .write_header()
                .map_err(|e| fail(format!("encoding the PNG: {e}")))?;
            writer
                .write_image_data(&rgb)
                .map_err(|e| fail(format!("encoding the PNG: {e}")))?;
        }
        crate::files::write_atomically(path, &png)
    }
}

/// Registers a system font for plotters' "sans-serif" (once per process).
fn font() -> std::result::Result<(), String> {
    static FONT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates = FONT_PATHS
            .iter()
            .map(PathBuf::from)
            .chain(first_ttf(Path::new(FONT_DIR), 4));
        for p in candidates {
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(p);
            }
        }
        Err(format!(
            "no TrueType font to draw text with: looked for {} and any .ttf under {FONT_DIR} \
             (Debian: apt install fonts-dejavu-core)",
            FONT_PATHS.join(", ")
        ))
    })
    .clone()
    .map(|_| ())
}

/// The first `.ttf` file under `dir`, searching `depth` levels (in name order).
fn first_ttf(dir: &Path, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in &entries {
        if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            return Some(p.clone());
        }
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|p| first_ttf(p, depth - 1))
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(history: &History, rgb: &mut [u8]) -> DrawResult {
    let root = BitMapBackend::with_buffer(rgb, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let epochs: Vec<f64> = history
        .epochs
        .iter()
        .map(|e| e.epoch as f64 + 1.0)
        .collect();
    let loss = [
        ("loss", Some(history.loss())),
        ("val_loss", history.val_loss()),
    ];
    let accuracy = [
        ("accuracy", history.accuracy()),
        ("val_accuracy", history.val_accuracy()),
    ];
    let panels = if accuracy[0].1.is_some() {
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        vec![(left, "loss", &loss), (right, "accuracy", &accuracy)]
    } else {
        vec![(root.clone(), "loss", &loss)]
    };
    for (area, title, series) in panels {
        panel(&area, title, &epochs, series)?;
    }
    root.present()?;
    Ok(())
}

/// One chart of `series` (training first, validation second) against the epochs.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    epochs: &[f64],
    series: &[(&str, Option<Vec<f32>>); 2],
) -> DrawResult {
    let values = series
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .flatten()
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo <= hi {
        let pad = ((hi - lo) * 0.08).max(1e-3);
        ((lo - pad) as f64, (hi + pad) as f64)
    } else {
        (0.0, 1.0)
    };
    let last = epochs.last().copied().unwrap_or(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5f64..last + 0.5, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.len().min(12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    let colors = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];
    for ((name, values), color) in series.iter().zip(colors) {
        let Some(values) = values else {
            continue;
        };
        let points: Vec<(f64, f64)> = epochs
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite())
            .map(|(&e, &v)| (e, v as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
