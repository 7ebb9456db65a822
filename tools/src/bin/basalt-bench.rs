//! `basalt-bench`: fio-style benchmark of Basalt's device layer and Raft log.
//! See `tools::bench` for what it measures; `basalt-bench --help` for the options.

use std::process::ExitCode;

use clap::Parser;
use tools::bench::{self, args::OutputFormat, BenchArgs};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let args = BenchArgs::parse();
    match bench::run(&args) {
        Ok(report) => {
            match args.output_format {
                OutputFormat::Json => println!("{}", report.to_json()),
                OutputFormat::Normal => print!("{}", report.to_text()),
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("basalt-bench: error: {err}");
            ExitCode::FAILURE
        }
    }
}
