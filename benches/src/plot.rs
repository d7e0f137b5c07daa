//! The replay plot: cost per hour and pending pods over trace time, one line per run, as SVG
//! (plotters' SVG backend only).

use std::path::Path;

use plotters::prelude::*;

use crate::replay::Point;

/// Line colours of the runs, in order (then repeated).
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Write `path`: two charts, cost per hour (USD) and pending pods, against trace hours, for
/// every `(name, series)`.
///
/// # Errors
/// A message when plotters cannot draw or the file cannot be written.
pub fn write_svg(path: &Path, title: &str, runs: &[(&str, &[Point])]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(380);
    let hours = |t: i64| t as f64 / 3600.0;
    let (x0, x1) = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| hours(p.t)))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else {
        (0.0, 1.0)
    };
    let max_cost = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.cost_per_hour))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let max_pending = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.pending as f64))
        .fold(0.0f64, f64::max)
        .max(1.0);
    type Value = fn(&Point) -> f64;
    let charts: [(&DrawingArea<SVGBackend, _>, String, &str, f64, Value); 2] = [
        (
            &top,
            format!("{title}: cost per hour"),
            "USD / hour",
            max_cost * 1.05,
            |p| p.cost_per_hour,
        ),
        (
            &bottom,
            format!("{title}: pending pods"),
            "pending pods",
            max_pending * 1.05,
            |p| p.pending as f64,
        ),
    ];
    for (area, caption, y_desc, y_max, value) in charts {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("trace hours")
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, series)) in runs.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    series.iter().map(|p| (hours(p.t), value(p))),
                    colour.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
