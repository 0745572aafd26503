//! The timeline plot in both formats, read back: the PNG really has its lines and its text
//! (drawn with the built-in font, nothing installed).

use twinhub_sim::{RunOptions, Scenario, plot, run};

fn report() -> twinhub_sim::Report {
    let s = Scenario::from_toml_str(
        r#"
name = "plot"
devices = 200
duration = "20m"
[[region]]
name = "primary"
outages = [{ from = "5m", to = "10m" }]
[[region]]
name = "secondary"
[[link]]
name = "wan"
cost = "free"
"#,
    )
    .unwrap();
    run(&s, &RunOptions::default()).unwrap()
}

#[test]
fn png_and_svg_timelines_are_drawn_with_lines_and_text() {
    let r = report();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("t.png");
    plot::draw(&r, &png).unwrap();
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1000, 900));
    let count = |f: &dyn Fn(&image::Rgb<u8>) -> bool| img.pixels().filter(|p| f(p)).count();
    // The two regions' lines (blue, red) and the backlog's (black) are there.
    let blue = count(&|p| p.0[2] > 200 && p.0[0] < 60 && p.0[1] < 60);
    let red = count(&|p| p.0[0] > 200 && p.0[1] < 60 && p.0[2] < 60);
    assert!(blue > 500 && red > 500, "blue {blue}, red {red}");
    // The caption band of the first panel holds glyphs: dark pixels in several columns.
    let caption_columns = (0..1000)
        .filter(|&x| (0..30).any(|y| img.get_pixel(x, y).0.iter().all(|&c| c < 100)))
        .count();
    assert!(
        caption_columns > 100,
        "caption text: {caption_columns} columns"
    );

    let svg = dir.path().join("t.svg");
    plot::draw(&r, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.contains("plot: records delivered per minute"));
}

#[test]
fn a_plot_that_cannot_be_written_names_its_path() {
    let r = report();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("t.png");
    let e = plot::draw(&r, &path).unwrap_err().to_string();
    assert!(e.contains("missing"), "{e}");
}
