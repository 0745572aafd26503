//! Runs a scenario file and prints the summary: `cargo run -p twinhub-sim --example run -- FILE`.
fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scenarios/fabrikam.toml".into());
    let s = twinhub_sim::Scenario::from_file(std::path::Path::new(&path)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let opts = twinhub_sim::RunOptions {
        devices: std::env::args().nth(2).and_then(|d| d.parse().ok()),
        ..Default::default()
    };
    let r = twinhub_sim::run(&s, &opts).unwrap();
    print!("{}", r.summary());
}
