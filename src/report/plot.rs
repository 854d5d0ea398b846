//! Figures as SVG and PNG from the same drawing code (plotters), text in the bundled DejaVu Sans
//! (assets/fonts) so no system font library is needed: score heatmaps (edge × op), lines of a
//! metric against a swept setting with ±std bars, and per-edge bars.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

const FONT: &str = "sans-serif";
static DEJAVU: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// One line of a line chart: (x, y, ±err) points, sorted by x when drawn.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// A matrix of values with row and column names; non-finite cells are drawn grey.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

/// What a figure shows.
#[derive(Debug, Clone)]
pub enum Figure {
    /// Points of each series, joined by lines when `connect` (else a scatter plot).
    Lines {
        title: String,
        x_label: String,
        y_label: String,
        log_x: bool,
        connect: bool,
        series: Vec<Series>,
    },
    /// Panels side by side, each scaled to its own range.
    Heatmaps {
        title: String,
        panels: Vec<Heatmap>,
    },
    Bars {
        title: String,
        y_label: String,
        labels: Vec<String>,
        values: Vec<f64>,
    },
}

fn init_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU).is_err() {
            panic!("the bundled DejaVu Sans does not parse");
        }
    });
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        match self {
            Figure::Lines { .. } => (800, 500),
            Figure::Heatmaps { panels, .. } => {
                let cols: usize = panels.iter().map(|p| p.cols.len().max(1)).sum();
                let rows = panels.iter().map(|p| p.rows.len()).max().unwrap_or(1);
                (
                    (90 * panels.len() as u32 + 72 * cols as u32).clamp(500, 3200),
                    (110 + 26 * rows as u32).clamp(260, 1600),
                )
            }
            Figure::Bars { labels, .. } => ((200 + 28 * labels.len() as u32).clamp(500, 2400), 450),
        }
    }

    /// Write `stem.svg` and `stem.png`; returns their paths.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        init_font();
        let (w, h) = self.size();
        let svg_path = stem.with_extension("svg");
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::Invalid(format!("drawing {}: {e}", svg_path.display())))?;
            root.present().map_err(|e| Error::Invalid(format!("drawing {}: {e}", svg_path.display())))?;
        }
        write_atomic(&svg_path, svg.as_bytes())?;
        let png_path = stem.with_extension("png");
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::Invalid(format!("drawing {}: {e}", png_path.display())))?;
            root.present().map_err(|e| Error::Invalid(format!("drawing {}: {e}", png_path.display())))?;
        }
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &rgb,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Invalid(format!("encoding {}: {e}", png_path.display())))?;
        write_atomic(&png_path, &png)?;
        Ok(vec![svg_path, png_path])
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        match self {
            Figure::Lines { title, x_label, y_label, log_x, connect, series } => {
                draw_lines(root, (title, x_label, y_label), *log_x, *connect, series)
            }
            Figure::Heatmaps { title, panels } => {
                let root = root.titled(title, (FONT, 20)).map_err(|e| e.to_string())?;
                let areas = root.split_evenly((1, panels.len().max(1)));
                for (p, a) in panels.iter().zip(&areas) {
                    draw_heatmap(a, p)?;
                }
                Ok(())
            }
            Figure::Bars { title, y_label, labels, values } => draw_bars(root, title, y_label, labels, values),
        }
    }
}

/// Range of finite values, widened when flat.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * (1.0 + lo.abs()) {
        let pad = 0.5 * (1.0 + lo.abs()) * 1e-3;
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (title, x_label, y_label): (&str, &str, &str),
    log_x: bool,
    connect: bool,
    series: &[Series],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let tx = |x: f64| if log_x { x.max(1e-300).log10() } else { x };
    let (x0, x1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| tx(p.0))));
    let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().flat_map(|p| [p.1 - p.2, p.1 + p.2])));
    let (xp, yp) = ((x1 - x0) * 0.05, (y1 - y0) * 0.08);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - xp)..(x1 + xp), (y0 - yp)..(y1 + yp))
        .map_err(e)?;
    let xl = if log_x { format!("{x_label} (log10)") } else { x_label.to_string() };
    chart
        .configure_mesh()
        .x_desc(xl)
        .y_desc(y_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(e)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts: Vec<(f64, f64, f64)> = s.points.iter().map(|p| (tx(p.0), p.1, p.2)).collect();
        pts.retain(|p| p.0.is_finite() && p.1.is_finite());
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<(f64, f64)> = if connect { pts.iter().map(|p| (p.0, p.1)).collect() } else { Vec::new() };
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(e)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled()))).map_err(e)?;
        chart
            .draw_series(
                pts.iter()
                    .filter(|p| p.2 > 0.0)
                    .map(|p| PathElement::new(vec![(p.0, p.1 - p.2), (p.0, p.1 + p.2)], color.stroke_width(1))),
            )
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Axis labels turned 90°, reading downwards from the axis.
fn rotated() -> TextStyle<'static> {
    TextStyle::from((FONT, 11).into_font()).transform(FontTransform::Rotate90).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ),
    )
}

/// Blue (low) to white to red (high).
fn heat(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64, u: f64| (a + (b - a) * u).round() as u8;
    if t < 0.5 {
        let u = t / 0.5;
        RGBColor(lerp(33.0, 247.0, u), lerp(102.0, 247.0, u), lerp(172.0, 247.0, u))
    } else {
        let u = (t - 0.5) / 0.5;
        RGBColor(lerp(247.0, 178.0, u), lerp(247.0, 24.0, u), lerp(247.0, 43.0, u))
    }
}

fn draw_heatmap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &Heatmap) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (nr, nc) = (h.rows.len(), h.cols.len());
    let (lo, hi) = range(h.values.iter().flatten().copied());
    let mut chart = ChartBuilder::on(area)
        .caption(&h.title, (FONT, 15))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..nc.max(1) - 1).into_segmented(), (0..nr.max(1) - 1).into_segmented())
        .map_err(e)?;
    let (rows, cols) = (h.rows.clone(), h.cols.clone());
    // Segment centres carry the names; row 0 is drawn at the top.
    let col_name = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(c) => cols.get(*c).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let row_name = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(r) if *r < nr => rows[nr - 1 - *r].clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nc)
        .y_labels(nr)
        .x_label_formatter(&col_name)
        .y_label_formatter(&row_name)
        .x_label_style((FONT, 10))
        .y_label_style((FONT, 11))
        .draw()
        .map_err(e)?;
    let grey = RGBColor(200, 200, 200);
    chart
        .draw_series((0..nr).flat_map(|r| {
            let row = &h.values[r];
            (0..nc).map(move |c| {
                let v = row.get(c).copied().unwrap_or(f64::NAN);
                let color = if v.is_finite() { heat((v - lo) / (hi - lo)) } else { grey };
                let y = nr - 1 - r;
                Rectangle::new(
                    [
                        (SegmentValue::Exact(c), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1)),
                    ],
                    color.filled(),
                )
            })
        }))
        .map_err(e)?;
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    labels: &[String],
    values: &[f64],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (lo, hi) = range(values.iter().copied().chain([0.0]));
    let pad = (hi - lo) * 0.08;
    let n = labels.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(90)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n - 1).into_segmented(), (lo - pad)..(hi + pad))
        .map_err(e)?;
    let l = labels.to_vec();
    let name = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => l.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&name)
        .x_label_style(rotated())
        .y_desc(y_label)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(e)?;
    let color = RGBColor(33, 102, 172);
    chart
        .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
            let (a, b) = if v >= 0.0 { (0.0, v) } else { (v, 0.0) };
            Rectangle::new([(SegmentValue::Exact(i), a), (SegmentValue::Exact(i + 1), b)], color.filled())
        }))
        .map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_valid_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let figs = [
            Figure::Lines {
                title: "t".into(),
                x_label: "N".into(),
                y_label: "acc".into(),
                log_x: true,
                connect: true,
                series: vec![Series { label: "woodbury".into(), points: vec![(1.0, 0.5, 0.1), (10.0, 0.7, 0.0)] }],
            },
            Figure::Heatmaps {
                title: "scores".into(),
                panels: vec![Heatmap {
                    title: "cell".into(),
                    rows: vec!["1<-0".into(), "2<-0".into()],
                    cols: vec!["a".into(), "b".into(), "c".into()],
                    values: vec![vec![1.0, f64::NEG_INFINITY, 0.0], vec![0.5, 0.2, 0.3]],
                }],
            },
            Figure::Bars { title: "b".into(), y_label: "τ".into(), labels: vec!["e".into()], values: vec![-0.5] },
        ];
        for (i, f) in figs.iter().enumerate() {
            let paths = f.save(&dir.path().join(format!("f{i}"))).unwrap();
            let svg = std::fs::read_to_string(&paths[0]).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg:.200}");
            let img = image::open(&paths[1]).unwrap().to_rgb8();
            assert_eq!((img.width(), img.height()), f.size());
            // Something other than the white background was drawn.
            assert!(img.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 1000);
        }
    }
}
