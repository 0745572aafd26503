//! The report's timeline as an SVG chart: deliveries per region, the backlog at risk and
//! the costly links' bytes, one point per simulated minute.

use std::path::Path;

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

/// Draws the timeline of `report` into an SVG file at `path`.
pub fn svg(report: &Report, path: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let t = &report.timeline;
    let minutes = t.len().max(2) as u64 - 1;
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((3, 1));

    let top = t
        .iter()
        .flat_map(|m| m.delivered.iter().copied())
        .max()
        .unwrap_or(1);
    let caption = format!("{}: records delivered per minute", report.scenario);
    let mut c = panel(&panels[0], &caption, minutes, top).map_err(|e| err(&e))?;
    for (i, name) in report.regions.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        c.draw_series(LineSeries::new(
            t.iter().map(|m| (m.minute, m.delivered[i])),
            colour,
        ))
        .map_err(|e| err(&e))?
        .label(name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;

    let top = t.iter().map(|m| m.pending).max().unwrap_or(1);
    let caption = "records at risk (accepted, not yet received)";
    let mut c = panel(&panels[1], caption, minutes, top).map_err(|e| err(&e))?;
    c.draw_series(LineSeries::new(
        t.iter().map(|m| (m.minute, m.pending)),
        BLACK,
    ))
    .map_err(|e| err(&e))?;

    let mut total = 0u64;
    let spend: Vec<(u64, u64)> = t
        .iter()
        .map(|m| {
            total += m.costly_bytes;
            (m.minute, total)
        })
        .collect();
    let caption = "costly-link bytes delivered, cumulative";
    let mut c = panel(&panels[2], caption, minutes, total).map_err(|e| err(&e))?;
    c.draw_series(LineSeries::new(spend, RED))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordu64, plotters::coord::types::RangedCoordu64>,
>;

/// One panel: a caption, minutes across, `0..top` (plus headroom) up, its mesh drawn.
fn panel<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    minutes: u64,
    top: u64,
) -> Result<Chart<'a, 'b>, DrawingAreaErrorKind<std::io::Error>> {
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
