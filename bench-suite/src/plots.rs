//! PNG charts of a report with `plotters`: GEMM GFLOP/s against size per library, and seconds
//! per epoch per program per framework. Text is drawn with a TrueType font read at run time
//! (DejaVu Sans, Debian's fonts-dejavu-core); without one the charts are skipped with a message.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::report::GemmReport;
use crate::training::TrainingReport;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font for the charts; false when none is found.
pub fn load_font() -> bool {
    for p in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// GFLOP/s of every library on the square sizes, one line per library, for `threads`.
pub fn gemm_chart(report: &GemmReport, threads: usize, path: &Path) -> Res {
    let Some(run) = report.runs.iter().find(|r| r.threads == threads) else {
        return Ok(());
    };
    let square: Vec<&crate::gemm_bench::Measurement> = run
        .measurements
        .iter()
        .filter(|m| m.shape.is_plain() && m.shape.m == m.shape.n && m.shape.n == m.shape.k)
        .collect();
    let mut libs: Vec<String> = square.iter().map(|m| m.library.clone()).collect();
    libs.dedup();
    libs.sort();
    libs.dedup();
    let max_g = square.iter().map(|m| m.gflops_median).fold(0.0, f64::max) * 1.1;
    let max_n = square.iter().map(|m| m.shape.n).max().unwrap_or(64) as f64;
    let min_n = square.iter().map(|m| m.shape.n).min().unwrap_or(64).max(1) as f64;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("f32 GEMM, square sizes, {threads} thread(s)"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((min_n * 0.8..max_n * 1.2).log_scale(), 0f64..max_g)?;
    chart
        .configure_mesh()
        .x_desc("M = N = K")
        .y_desc("GFLOP/s")
        .draw()?;
    for (i, lib) in libs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts: Vec<(f64, f64)> = square
            .iter()
            .filter(|m| &m.library == lib)
            .map(|m| (m.shape.n as f64, m.gflops_median))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(lib.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Seconds per epoch of every program on `dataset`: ours, Keras, PyTorch side by side.
pub fn training_chart(t: &TrainingReport, dataset: &str, path: &Path) -> Res {
    let rows: Vec<_> = t
        .summary
        .iter()
        .filter(|r| r.dataset == dataset || (dataset == "mnist" && r.dataset == "synthetic"))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let series: [(&str, RGBColor); 4] = [
        ("ours", RGBColor(31, 119, 180)),
        ("Keras", RGBColor(255, 127, 14)),
        ("PyTorch", RGBColor(44, 160, 44)),
        ("burn", RGBColor(214, 39, 40)),
    ];
    let value = |r: &crate::training::TrainSummaryRow, s: usize| match s {
        0 => Some(r.ours_epoch_s),
        1 => r.keras_epoch_s,
        2 => r.torch_epoch_s,
        _ => r.burn_epoch_s,
    };
    let max_s = rows
        .iter()
        .flat_map(|r| (0..series.len()).filter_map(move |s| value(r, s)))
        .fold(0.0, f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = rows.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Seconds per epoch ({dataset}; E is synthetic), {} threads",
                t.threads
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..max_s)?;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} ({})", r.program, r.dataset))
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(4 * n)
        .x_label_formatter(&|x| {
            // Group i is centred on x = i; other tick positions get no label.
            if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                labels.get(x.round() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("s / epoch (lower is better)")
        .draw()?;
    for (s, (name, color)) in series.iter().enumerate() {
        let bars: Vec<_> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                value(r, s).map(|v| {
                    let x0 = i as f64 - 0.4 + s as f64 * 0.2;
                    Rectangle::new([(x0, 0.0), (x0 + 0.19, v)], color.filled())
                })
            })
            .collect();
        let c = *color;
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The projected efficiency (speed-up ÷ machines) against the number of machines, one line
/// per bandwidth: on log axes the speed-ups themselves all but hide behind the ideal line.
pub fn distributed_chart(r: &crate::distributed::DistributedReport, path: &Path) -> Res {
    let efficiency = |p: &crate::distributed::Projection| 100.0 * p.speedup / p.machines as f64;
    let lowest = r.projections.iter().map(efficiency).fold(100.0, f64::min);
    let floor = ((lowest - 5.0) / 10.0).floor().max(0.0) * 10.0;
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Data-parallel CNN: projected efficiency (batch {} per machine)",
                r.batch
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        // x: log₂ of the machine count, labelled with the count.
        .build_cartesian_2d(0.8f64..6.2f64, floor..100.5)?;
    chart
        .configure_mesh()
        .x_labels(7)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 && *x >= 1.0 {
                format!("{}", 1u64 << x.round() as u32)
            } else {
                String::new()
            }
        })
        .x_desc("machines")
        .y_desc("speed-up ÷ machines, % (higher is better)")
        .draw()?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    for (g, c) in [10.0, 25.0, 100.0].into_iter().zip(colors) {
        let points: Vec<(f64, f64)> = r
            .projections
            .iter()
            .filter(|p| p.gbit_s == g)
            .map(|p| ((p.machines as f64).log2(), efficiency(p)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
            .label(format!("{g:.0} Gb/s"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
