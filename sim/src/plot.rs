//! The report's timeline as a chart, in SVG or PNG: deliveries per region, the backlog at
//! risk and the costly links' bytes, one point per simulated minute.
//!
//! The PNG's text is drawn with a font compiled into the program (DejaVu Sans), so it
//! needs no fonts installed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Report;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

const COLOURS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

/// Draws the timeline of `report` into `path`: a PNG when the name ends in `.png`, an SVG
/// otherwise.
pub fn draw(report: &Report, path: &Path) -> Result<(), PlotError> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        png(report, path)
    } else {
        svg(report, path)
    }
}

/// Draws the timeline of `report` into an SVG file at `path`.
pub fn svg(report: &Report, path: &Path) -> Result<(), PlotError> {
    render(report, path, SVGBackend::new(path, SIZE))
}

/// Draws the timeline of `report` into a PNG file at `path`.
pub fn png(report: &Report, path: &Path) -> Result<(), PlotError> {
    render(report, path, BitMapBackend::new(path, SIZE))
}

/// Draws the timeline on `backend`, which writes to `path`.
fn render<B: DrawingBackend>(report: &Report, path: &Path, backend: B) -> Result<(), PlotError> {
    fonts(path)?;
    timeline(report, &backend.into_drawing_area()).map_err(|message| PlotError {
        path: path.display().to_string(),
        message,
    })
}

const SIZE: (u32, u32) = (1000, 900);

/// Registers the built-in font once: plotters looks fonts up by family name.
fn fonts(path: &Path) -> Result<(), PlotError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError {
            path: path.display().to_string(),
            message: "the built-in font could not be loaded".into(),
        })
    }
}

fn timeline<DB: DrawingBackend>(
    report: &Report,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let t = &report.timeline;
    let minutes = t.len().max(2) as u64 - 1;
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((3, 1));

    let top = t
        .iter()
        .flat_map(|m| m.delivered.iter().copied())
        .max()
        .unwrap_or(1);
    let caption = format!("{}: records delivered per minute", report.scenario);
    let mut c = panel(&panels[0], &caption, minutes, top).map_err(err)?;
    for (i, name) in report.regions.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        c.draw_series(LineSeries::new(
            t.iter().map(|m| (m.minute, m.delivered[i])),
            colour,
        ))
        .map_err(err)?
        .label(name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let top = t.iter().map(|m| m.pending).max().unwrap_or(1);
    let caption = "records at risk (accepted, not yet received)";
    let mut c = panel(&panels[1], caption, minutes, top).map_err(err)?;
    c.draw_series(LineSeries::new(
        t.iter().map(|m| (m.minute, m.pending)),
        BLACK,
    ))
    .map_err(err)?;

    let mut total = 0u64;
    let spend: Vec<(u64, u64)> = t
        .iter()
        .map(|m| {
            total += m.costly_bytes;
            (m.minute, total)
        })
        .collect();
    let caption = "costly-link bytes delivered, cumulative";
    let mut c = panel(&panels[2], caption, minutes, total).map_err(err)?;
    c.draw_series(LineSeries::new(spend, RED)).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

type Chart<'a, 'b, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordu64, plotters::coord::types::RangedCoordu64>,
>;

/// One panel: a caption, minutes across, `0..top` (plus headroom) up, its mesh drawn.
fn panel<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    minutes: u64,
    top: u64,
) -> Result<Chart<'a, 'b, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let top = top.max(1);
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0..minutes, 0..top + top / 10)?;
    c.configure_mesh().x_desc("minute").draw()?;
    Ok(c)
}
