//! Line charts for figures, rendered to PNG and SVG with plotters and an embedded DejaVu font
//! (no fontconfig needed). A figure module builds [`Panel`]s from computed metrics; this module
//! only draws them.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::anyhow;

use plotters::coord::ranged1d::Ranged;
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
    /// Points as dots, no line (data points such as a prompt's context).
    pub markers: bool,
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

/// Pixels per SVG pixel in the PNGs: PNGs are rendered at twice the SVG's size (every font, line
/// and margin scaled), so they print sharply.
pub const PNG_SCALE: f64 = 2.0;

/// Sizes at one output's scale.
#[derive(Clone, Copy, Debug)]
struct Px(f64);

impl Px {
    fn u(self, v: u32) -> u32 {
        (v as f64 * self.0).round() as u32
    }
    fn i(self, v: i32) -> i32 {
        (v as f64 * self.0).round() as i32
    }
    fn f(self, v: f64) -> f64 {
        v * self.0
    }
}

/// Writes `<dir>/<stem>.png` (at [`PNG_SCALE`]) and `<dir>/<stem>.svg` (atomically) and returns
/// both paths.
pub fn render(panel: &Panel, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
    register_fonts();
    let (w, h) = panel.chart_size.unwrap_or((560, 420));
    let size = |px: Px| (px.u(w) * panel.charts.len().max(1) as u32, px.u(h));
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    with_atomic_path(&png, |p| {
        let px = Px(PNG_SCALE);
        let root = BitMapBackend::new(p, size(px)).into_drawing_area();
        draw_panel(&root, panel, px)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    with_atomic_path(&svg, |p| {
        let px = Px(1.0);
        let root = SVGBackend::new(p, size(px)).into_drawing_area();
        draw_panel(&root, panel, px)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    Ok(vec![png, svg])
}

fn draw_panel<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, panel: &Panel, px: Px) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let areas = root.split_evenly((1, panel.charts.len().max(1)));
    for (chart, area) in panel.charts.iter().zip(areas.iter()) {
        draw_chart(area, chart, px)?;
    }
    Ok(())
}

/// The x and y ranges of a chart's data (y in log10 when the chart is logarithmic).
fn ranges(chart: &Chart, log_y: bool) -> (Range<f64>, Range<f64>) {
    let xs = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0.is_finite() && x1 > x0 { (x0, x1) } else { (0.0, 1.0) };
    let to_axis = |y: f64| if log_y { y.log10() } else { y };
    if let Some((lo, hi)) = chart.y_range {
        return (x0..x1, to_axis(lo)..to_axis(hi));
    }
    let ys =
        chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])));
    let ys = ys.filter(|y| y.is_finite() && (!log_y || *y > 0.0)).map(to_axis);
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if !(y0.is_finite() && y1.is_finite()) {
        (y0, y1) = if log_y { (-1.0, 0.0) } else { (0.0, 1.0) };
    }
    let pad = if log_y { 0.08f64.max((y1 - y0) * 0.03) } else { ((y1 - y0) * 0.05).max(1e-6) };
    (x0..x1, y0 - pad..y1 + pad)
}

/// Tick positions for a linear axis: multiples of 1, 2 or 5 × 10^k, at most about `target`; on an
/// axis of whole numbers (layers, examples) only whole numbers.
fn linear_ticks(r: &Range<f64>, target: usize, integers: bool) -> Vec<f64> {
    let span = (r.end - r.start).abs().max(1e-12);
    let raw = span / target.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    if integers {
        step = step.max(1.0).round();
    }
    let first = (r.start / step).ceil() as i64;
    let last = (r.end / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Tick positions (in log10) for a logarithmic axis over `r` (in log10): every decade, with 2 and
/// 5 between when there are few decades, and every integer multiple within a single decade.
fn log_ticks(r: &Range<f64>) -> Vec<f64> {
    let decades = r.end - r.start;
    let multiples: &[f64] = if decades > 6.0 {
        &[1.0]
    } else if decades > 1.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    };
    let step = if decades > 12.0 { (decades / 8.0).ceil() as i64 } else { 1 };
    let mut out = Vec::new();
    for k in (r.start.floor() as i64..=r.end.ceil() as i64).filter(|k| k % step == 0) {
        for m in multiples {
            let v = k as f64 + m.log10();
            if v >= r.start && v <= r.end {
                out.push(v);
            }
        }
    }
    out
}

/// A linear f64 axis whose ticks are chosen here ([`linear_ticks`], [`log_ticks`]) rather than by
/// plotters (which gives three labels on a short log axis and 1.1, 1.2, … on a layer axis).
#[derive(Clone, Debug)]
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.range.start) / (self.range.end - self.range.start);
        (limit.0 as f64 + t * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
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

/// Legend entries: (label, colour index, dashed, markers).
fn legend_entries(chart: &Chart) -> Vec<(&str, usize, bool, bool)> {
    chart
        .series
        .iter()
        .filter(|s| !s.label.is_empty())
        .map(|s| (s.label.as_str(), s.color, s.dashed, s.markers))
        .collect()
}

/// Columns and rows of the legend below a chart of `width` pixels.
fn legend_grid(entries: &[(&str, usize, bool, bool)], width: u32, px: Px) -> (usize, usize, u32) {
    let longest = entries.iter().map(|e| e.0.chars().count()).max().unwrap_or(0) as u32;
    let column_width = px.u(40 + 7 * longest);
    let columns = ((width.saturating_sub(px.u(24))) / column_width.max(1)).clamp(1, 4) as usize;
    let rows = entries.len().div_ceil(columns);
    (columns, rows, column_width)
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart, px: Px) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    // The legend sits below the plot, outside the data.
    let entries = legend_entries(chart);
    let (width, height) = area.dim_in_pixel();
    let (columns, rows, column_width) = legend_grid(&entries, width, px);
    let legend_height = if entries.is_empty() { 0 } else { px.u(10 + 18 * rows as u32) };
    let (plot_area, legend_area) = area.split_vertically(height.saturating_sub(legend_height));

    let log_y = chart.log_y;
    let (x, y) = ranges(chart, log_y);
    let on_axis = |v: f64| {
        if log_y {
            if v > 0.0 {
                v.log10()
            } else {
                f64::NAN
            }
        } else {
            v
        }
    };
    let integers =
        chart.series.iter().flat_map(|s| s.points.iter()).all(|p| p.0.fract() == 0.0) && (x.end - x.start) <= 60.0;
    let x_ticks = linear_ticks(&x, 10, integers);
    let y_ticks = if log_y { log_ticks(&y) } else { linear_ticks(&y, 8, false) };
    let mut ctx = ChartBuilder::on(&plot_area)
        .caption(&chart.title, ("sans-serif", px.f(18.0)))
        .margin(px.u(12))
        .x_label_area_size(px.u(40))
        .y_label_area_size(px.u(64))
        .build_cartesian_2d(Axis { range: x, ticks: x_ticks }, Axis { range: y, ticks: y_ticks })
        .map_err(err)?;
    let y_label = |v: &f64| if log_y { tick(10f64.powf(*v)) } else { tick(*v) };
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", px.f(13.0)))
        .axis_desc_style(("sans-serif", px.f(14.0)))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&y_label)
        .bold_line_style(BLACK.mix(0.12).stroke_width(px.u(1)))
        .light_line_style(WHITE.mix(0.0))
        .axis_style(BLACK.stroke_width(px.u(1)))
        .draw()
        .map_err(err)?;
    for s in &chart.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let band: Vec<(f64, f64, f64)> = s
            .band
            .iter()
            .map(|b| (b.0, on_axis(b.1), on_axis(b.2)))
            .filter(|b| b.1.is_finite() && b.2.is_finite())
            .collect();
        if !band.is_empty() {
            let outline: Vec<(f64, f64)> =
                band.iter().map(|b| (b.0, b.2)).chain(band.iter().rev().map(|b| (b.0, b.1))).collect();
            ctx.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.2).filled()))).map_err(err)?;
        }
        let style = color.stroke_width(px.u(2));
        let points: Vec<(f64, f64)> =
            s.points.iter().map(|p| (p.0, on_axis(p.1))).filter(|p| p.1.is_finite()).collect();
        if s.markers {
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, px.u(4), color.filled()))).map_err(err)?;
        } else if s.dashed {
            ctx.draw_series(DashedLineSeries::new(points, px.u(8), px.u(5), style)).map_err(err)?;
        } else {
            ctx.draw_series(LineSeries::new(points, style)).map_err(err)?;
        }
    }
    // The legend: a line sample and the label per entry, in columns.
    for (k, (label, color, dashed, markers)) in entries.iter().enumerate() {
        let color = PALETTE[color % PALETTE.len()];
        let (col, row) = ((k % columns) as i32, (k / columns) as i32);
        let x0 = px.i(24) + col * column_width as i32;
        let y0 = px.i(8) + row * px.i(18) + px.i(9);
        let style = color.stroke_width(px.u(2));
        if *markers {
            legend_area.draw(&Circle::new((x0 + px.i(11), y0), px.u(4), color.filled())).map_err(err)?;
        } else if *dashed {
            for (a, b) in [(0, 8), (13, 22)] {
                legend_area
                    .draw(&PathElement::new(vec![(x0 + px.i(a), y0), (x0 + px.i(b), y0)], style))
                    .map_err(err)?;
            }
        } else {
            legend_area.draw(&PathElement::new(vec![(x0, y0), (x0 + px.i(22), y0)], style)).map_err(err)?;
        }
        let font =
            ("sans-serif", px.f(13.0)).into_text_style(&legend_area).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Center,
            ));
        legend_area.draw(&Text::new(label.to_string(), (x0 + px.i(28), y0), font)).map_err(err)?;
    }
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

/// A reference learner's legend entry: the short label of the spec it was fitted from (every
/// setting it was given, lists and matrices by length and hash; tuned values such as η change
/// with n and are in the row's params, not here).
pub fn curve_label(m: &icl_probes::measure::Measurement) -> String {
    if let Some(spec) = &m.spec {
        return spec.short_label(); // the candidate's identity, every setting
    }
    // Rows without a spec (written before rows carried one): the settings that are not tuned.
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
    let size = |px: Px| (px.u(300) * columns as u32, px.u(320) * rows as u32);
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    with_atomic_path(&png, |p| {
        let px = Px(PNG_SCALE);
        let root = BitMapBackend::new(p, size(px)).into_drawing_area();
        draw_heatmaps(&root, maps, (rows, columns), px)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    with_atomic_path(&svg, |p| {
        let px = Px(1.0);
        let root = SVGBackend::new(p, size(px)).into_drawing_area();
        draw_heatmaps(&root, maps, (rows, columns), px)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    Ok(vec![png, svg])
}

fn draw_heatmaps<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    maps: &[Heatmap],
    grid: (usize, usize),
    px: Px,
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    for (map, area) in maps.iter().zip(root.split_evenly(grid).iter()) {
        let n_rows = map.values.len();
        let n_cols = map.values.first().map_or(0, Vec::len);
        let scale = map.values.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} (max |v| {})", map.title, tick(scale)), ("sans-serif", px.f(13.0)))
            .margin(px.u(8))
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
    render_labelled_heatmaps_scaled(maps, columns, dir, stem, caption, None)
}

/// As [`render_labelled_heatmaps`], with a linear colour scale from `linear.0` (dark) to
/// `linear.1` (bright) where given (values outside are clamped; the cells show the values), else
/// the log scale over the positive values.
pub fn render_labelled_heatmaps_scaled(
    maps: &[LabelledHeatmap],
    columns: usize,
    dir: &Path,
    stem: &str,
    caption: &str,
    linear: Option<(f64, f64)>,
) -> anyhow::Result<Vec<PathBuf>> {
    register_fonts();
    let columns = columns.clamp(1, maps.len().max(1));
    let rows = maps.len().div_ceil(columns).max(1);
    let widest = maps.iter().map(|m| m.column_labels.len()).max().unwrap_or(1) as u32;
    let tallest = maps.iter().map(|m| m.row_labels.len()).max().unwrap_or(1) as u32;
    let size = |px: Px| (px.u(140 + 86 * widest) * columns as u32, px.u(120 + 30 * tallest) * rows as u32 + px.u(40));
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    with_atomic_path(&png, |p| {
        let px = Px(PNG_SCALE);
        let root = BitMapBackend::new(p, size(px)).into_drawing_area();
        draw_labelled_heatmaps(&root, maps, (rows, columns), caption, linear, px)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    with_atomic_path(&svg, |p| {
        let px = Px(1.0);
        let root = SVGBackend::new(p, size(px)).into_drawing_area();
        draw_labelled_heatmaps(&root, maps, (rows, columns), caption, linear, px)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?;
    Ok(vec![png, svg])
}

fn draw_labelled_heatmaps<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    maps: &[LabelledHeatmap],
    grid: (usize, usize),
    caption: &str,
    linear: Option<(f64, f64)>,
    px: Px,
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(caption, ("sans-serif", px.f(18.0))).map_err(err)?;
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
            .caption(&map.title, ("sans-serif", px.f(15.0)))
            .margin(px.u(6))
            .x_label_area_size(px.u(28))
            .y_label_area_size(px.u(64))
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
            .label_style(("sans-serif", px.f(12.0)))
            .draw()
            .map_err(err)?;
        for (i, row) in map.values.iter().enumerate() {
            let y = (n_rows - 1 - i) as f64;
            for (j, &v) in row.iter().enumerate() {
                let t = match linear {
                    Some((a, b)) if v.is_finite() => Some(((v - a) / (b - a).max(1e-12)).clamp(0.0, 1.0)),
                    None if v.is_finite() && v > 0.0 => Some(((v.log10() - lo) / span).clamp(0.0, 1.0)), // 0 = smallest
                    _ => None,
                };
                let (fill, ink) = if let Some(t) = t {
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
                        ("sans-serif", px.f(11.0)).into_font().color(&ink).pos(plotters::style::text_anchor::Pos::new(
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
