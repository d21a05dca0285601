//! Line charts for figures, rendered to PNG and SVG with plotters and an embedded DejaVu font
//! (no fontconfig needed). A figure module builds [`Panel`]s from computed metrics; this module
//! only draws them.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::io::with_atomic_path;

/// A curve, optionally with a shaded band (e.g. min–max or ±1 std over seeds).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// (x, low, high)
    pub band: Vec<(f64, f64, f64)>,
    pub dashed: bool,
    pub color: usize,
}

impl Series {
    /// A dashed horizontal line at `y` from x = 0 to `x1` (a reference learner's loss).
    pub fn flat(label: impl Into<String>, y: f64, x1: f64, color: usize) -> Self {
        Series { label: label.into(), points: vec![(0.0, y), (x1, y)], dashed: true, color, ..Default::default() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Fixed y range; otherwise fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

/// One output image: charts side by side.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub charts: Vec<Chart>,
    /// Pixels per chart (width, height); default 560 × 420.
    pub chart_size: Option<(u32, u32)>,
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(80, 80, 80),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Writes `<dir>/<stem>.png` and `<dir>/<stem>.svg` (atomically) and returns both paths.
pub fn render(panel: &Panel, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
    register_fonts();
    let (w, h) = panel.chart_size.unwrap_or((560, 420));
    let size = (w * panel.charts.len().max(1) as u32, h);
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    with_atomic_path(&png, |p| {
        let root = BitMapBackend::new(p, size).into_drawing_area();
        draw_panel(&root, panel)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    with_atomic_path(&svg, |p| {
        let root = SVGBackend::new(p, size).into_drawing_area();
        draw_panel(&root, panel)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    Ok(vec![png, svg])
}

fn draw_panel<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, panel: &Panel) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let areas = root.split_evenly((1, panel.charts.len().max(1)));
    for (chart, area) in panel.charts.iter().zip(areas.iter()) {
        let (x, y) = ranges(chart);
        if chart.log_y {
            draw_chart(area, chart, x, y.log_scale())?;
        } else {
            draw_chart(area, chart, x, y)?;
        }
    }
    Ok(())
}

fn ranges(chart: &Chart) -> (Range<f64>, Range<f64>) {
    let xs = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0.is_finite() && x1 > x0 { (x0, x1) } else { (0.0, 1.0) };
    if let Some((lo, hi)) = chart.y_range {
        return (x0..x1, lo..hi);
    }
    let ys =
        chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])));
    let ys = ys.filter(|y| y.is_finite() && (!chart.log_y || *y > 0.0));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if !(y0.is_finite() && y1.is_finite()) {
        (y0, y1) = (0.1, 1.0);
    }
    let r = if chart.log_y {
        y0 / 1.2..y1 * 1.2
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        y0 - pad..y1 + pad
    };
    (x0..x1, r)
}

/// A tick label with no trailing zeros: 500, 0.25, 1e-3.
fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1e5 || v.abs() < 1e-3 {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn draw_chart<DB, Y>(area: &DrawingArea<DB, Shift>, chart: &Chart, x: Range<f64>, y: Y) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for s in &chart.series {
        let color = PALETTE[s.color % PALETTE.len()];
        if !s.band.is_empty() {
            let outline: Vec<(f64, f64)> =
                s.band.iter().map(|b| (b.0, b.2)).chain(s.band.iter().rev().map(|b| (b.0, b.1))).collect();
            ctx.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.2).filled()))).map_err(err)?;
        }
        let style = color.stroke_width(2);
        let points = s.points.iter().copied().filter(|p| p.1.is_finite());
        let drawn = if s.dashed {
            ctx.draw_series(DashedLineSeries::new(points, 8, 5, style)).map_err(err)?
        } else {
            ctx.draw_series(LineSeries::new(points, style)).map_err(err)?
        };
        // Unlabelled series (continuations of a curve broken by a gap) stay out of the legend.
        if !s.label.is_empty() {
            drawn
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Normalised error against the number of in-context examples, one series per learner (and per
/// model and layer) with its 90% band, from curve rows; points above `y_top` are left out (Garg
/// et al. cut their plots the same way) and the zero predictor's 1 is a dashed line.
pub fn curve_chart(rows: &[icl_probes::measure::Measurement], title: &str, y_top: f64) -> Chart {
    let mut series: Vec<Series> = Vec::new();
    let key = |m: &icl_probes::measure::Measurement| -> String {
        // One line per seed of a run (the seeds of one run share its name).
        match (&m.model, m.layer, m.seed) {
            (Some(run), Some(l), Some(s)) => format!("{run} (layer {l}, seed {s})"),
            (Some(run), Some(l), None) => format!("{run} (layer {l})"),
            (Some(run), None, Some(s)) => format!("{run} (seed {s})"),
            (Some(run), None, None) => run.clone(),
            _ => curve_label(m),
        }
    };
    for m in rows.iter().filter(|m| m.metric == "normalised_error") {
        let label = key(m);
        let i = match series.iter().position(|s| s.label == label) {
            Some(i) => i,
            None => {
                // Grey (5) is kept for the zero predictor's line.
                let color = if series.len() >= 5 { series.len() + 1 } else { series.len() };
                series.push(Series { label, color, ..Default::default() });
                series.len() - 1
            }
        };
        let n = m.n_context.unwrap_or(0) as f64;
        if m.value.is_finite() && m.value <= y_top {
            series[i].points.push((n, m.value));
            if let (Some(lo), Some(hi)) = (m.lo, m.hi) {
                series[i].band.push((n, lo, hi.min(y_top)));
            }
        }
    }
    let n_max = rows.iter().filter_map(|m| m.n_context).max().unwrap_or(1) as f64;
    series.retain(|s| !s.points.is_empty());
    // A curve that leaves the chart (averaging at small n) is drawn in pieces, not joined across the gap.
    let mut pieces = Vec::new();
    for s in &mut series {
        let all: Vec<(f64, f64)> = s.points.clone();
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        let ns: Vec<f64> = rows
            .iter()
            .filter(|m| m.metric == "normalised_error" && key(m) == s.label)
            .map(|m| m.n_context.unwrap_or(0) as f64)
            .collect();
        for n in ns {
            match all.iter().find(|p| p.0 == n) {
                Some(p) => runs.last_mut().expect("non-empty").push(*p),
                None if !runs.last().expect("non-empty").is_empty() => runs.push(Vec::new()),
                None => {}
            }
        }
        runs.retain(|r| !r.is_empty());
        if runs.len() > 1 {
            let band_of = |r: &[(f64, f64)]| -> Vec<(f64, f64, f64)> {
                s.band.iter().filter(|b| r.iter().any(|p| p.0 == b.0)).copied().collect()
            };
            let rest: Vec<Series> = runs[1..]
                .iter()
                .map(|r| Series {
                    label: String::new(),
                    points: r.clone(),
                    band: band_of(r),
                    color: s.color,
                    ..Default::default()
                })
                .collect();
            s.band = band_of(&runs[0]);
            s.points = runs.swap_remove(0);
            pieces.extend(rest);
        }
    }
    series.extend(pieces);
    series.push(Series {
        label: "1 (zero predictor, expected)".into(),
        points: vec![(0.0, 1.0), (n_max, 1.0)],
        dashed: true,
        color: 5,
        ..Default::default()
    });
    Chart {
        title: title.into(),
        x_label: "in-context examples n".into(),
        y_label: "normalised squared error".into(),
        y_range: Some((0.0, y_top)),
        series,
        ..Default::default()
    }
}

/// A reference learner's legend entry: its name and its fixed, scalar settings (tuned values
/// such as η change with n and are left out).
pub fn curve_label(m: &icl_probes::measure::Measurement) -> String {
    let fixed: Vec<String> = m
        .params
        .iter()
        .filter(|(k, v)| !v.is_array() && !v.is_object() && !matches!(k.as_str(), "eta" | "lambda" | "gamma" | "p"))
        .map(|(k, v)| format!("{k}={}", if v.is_null() { "none".to_string() } else { v.to_string() }))
        .collect();
    if fixed.is_empty() {
        m.learner.clone()
    } else {
        format!("{}({})", m.learner, fixed.join(", "))
    }
}

/// A matrix drawn as a heatmap (diverging colours, symmetric around 0).
#[derive(Clone, Debug)]
pub struct Heatmap {
    pub title: String,
    /// Rows of the matrix, top to bottom.
    pub values: Vec<Vec<f64>>,
}

/// Writes `<dir>/<stem>.png|svg`: heatmaps in a grid of `columns`, each scaled to its own max |value|.
pub fn render_heatmaps(maps: &[Heatmap], columns: usize, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
    register_fonts();
    let columns = columns.max(1);
    let rows = maps.len().div_ceil(columns).max(1);
    let size = (300 * columns as u32, 320 * rows as u32);
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    with_atomic_path(&png, |p| {
        let root = BitMapBackend::new(p, size).into_drawing_area();
        draw_heatmaps(&root, maps, (rows, columns))?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    with_atomic_path(&svg, |p| {
        let root = SVGBackend::new(p, size).into_drawing_area();
        draw_heatmaps(&root, maps, (rows, columns))?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    Ok(vec![png, svg])
}

fn draw_heatmaps<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    maps: &[Heatmap],
    grid: (usize, usize),
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    for (map, area) in maps.iter().zip(root.split_evenly(grid).iter()) {
        let n_rows = map.values.len();
        let n_cols = map.values.first().map_or(0, Vec::len);
        let scale = map.values.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} (max |v| {})", map.title, tick(scale)), ("sans-serif", 13))
            .margin(8)
            .build_cartesian_2d(0..n_cols as i32, 0..n_rows as i32)
            .map_err(err)?;
        chart
            .draw_series(map.values.iter().enumerate().flat_map(|(i, row)| {
                row.iter().enumerate().map(move |(j, &v)| {
                    let t = (v / scale).clamp(-1.0, 1.0);
                    // white at 0, red for positive, blue for negative
                    let color = if t >= 0.0 {
                        RGBColor(255, (255.0 * (1.0 - t)) as u8, (255.0 * (1.0 - t)) as u8)
                    } else {
                        RGBColor((255.0 * (1.0 + t)) as u8, (255.0 * (1.0 + t)) as u8, 255)
                    };
                    let y = (n_rows - 1 - i) as i32;
                    Rectangle::new([(j as i32, y), (j as i32 + 1, y + 1)], color.filled())
                })
            }))
            .map_err(err)?;
    }
    Ok(())
}

/// A table of values drawn as a heatmap with named rows and columns and the value in each cell,
/// e.g. SPD by layer (rows) and learner (columns).
#[derive(Clone, Debug)]
pub struct LabelledHeatmap {
    pub title: String,
    pub row_labels: Vec<String>,
    pub column_labels: Vec<String>,
    /// values[row][column]; NaN cells are left grey.
    pub values: Vec<Vec<f64>>,
}

/// Writes `<dir>/<stem>.png|svg`: labelled heatmaps in a grid of `columns`, coloured on a log
/// scale shared by all maps (dark = small), each cell printing its value.
pub fn render_labelled_heatmaps(
    maps: &[LabelledHeatmap],
    columns: usize,
    dir: &Path,
    stem: &str,
    caption: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    register_fonts();
    let columns = columns.clamp(1, maps.len().max(1));
    let rows = maps.len().div_ceil(columns).max(1);
    let widest = maps.iter().map(|m| m.column_labels.len()).max().unwrap_or(1) as u32;
    let tallest = maps.iter().map(|m| m.row_labels.len()).max().unwrap_or(1) as u32;
    let size = ((140 + 86 * widest) * columns as u32, (120 + 30 * tallest) * rows as u32 + 40);
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    with_atomic_path(&png, |p| {
        let root = BitMapBackend::new(p, size).into_drawing_area();
        draw_labelled_heatmaps(&root, maps, (rows, columns), caption)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    with_atomic_path(&svg, |p| {
        let root = SVGBackend::new(p, size).into_drawing_area();
        draw_labelled_heatmaps(&root, maps, (rows, columns), caption)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    Ok(vec![png, svg])
}

fn draw_labelled_heatmaps<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    maps: &[LabelledHeatmap],
    grid: (usize, usize),
    caption: &str,
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(caption, ("sans-serif", 18)).map_err(err)?;
    let finite: Vec<f64> =
        maps.iter().flat_map(|m| m.values.iter().flatten()).copied().filter(|v| v.is_finite() && *v > 0.0).collect();
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max).log10();
    // At most 4 decades of colour: smaller values all get the darkest.
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min).log10().max(hi - 4.0);
    let span = (hi - lo).max(1e-9);
    for (map, area) in maps.iter().zip(root.split_evenly(grid).iter()) {
        let (n_rows, n_cols) = (map.row_labels.len(), map.column_labels.len());
        let rows = map.row_labels.clone();
        let cols = map.column_labels.clone();
        let mut chart = ChartBuilder::on(area)
            .caption(&map.title, ("sans-serif", 15))
            .margin(6)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..n_cols as f64, 0.0..n_rows as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n_cols * 2 + 1)
            .y_labels(n_rows * 2 + 1)
            .x_label_formatter(&|x| {
                let i = (x - 0.5).round();
                if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                    cols.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                let i = (y - 0.5).round();
                // row 0 at the top
                if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n_rows {
                    rows[n_rows - 1 - i as usize].clone()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        for (i, row) in map.values.iter().enumerate() {
            let y = (n_rows - 1 - i) as f64;
            for (j, &v) in row.iter().enumerate() {
                let (fill, ink) = if v.is_finite() && v > 0.0 {
                    let t = ((v.log10() - lo) / span).clamp(0.0, 1.0); // 0 = smallest
                    let c = ViridisRGB::get_color(t);
                    (c, if t < 0.55 { WHITE } else { BLACK })
                } else {
                    (RGBColor(200, 200, 200), BLACK)
                };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(j as f64, y), (j as f64 + 1.0, y + 1.0)],
                        fill.filled(),
                    )))
                    .map_err(err)?;
                let text = if v.is_finite() { tick(v) } else { "–".into() };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (j as f64 + 0.5, y + 0.5),
                        ("sans-serif", 11).into_font().color(&ink).pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        )),
                    )))
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}
