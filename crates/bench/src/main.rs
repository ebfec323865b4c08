//! `moat-bench`: `run` a workload against a DynamoDB endpoint (after an
//! optional `--setup` that creates and loads the table), or serve the bare
//! `baseline`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use moat_bench::{Data, RunConfig, Target, Workload};

#[derive(Parser)]
#[command(name = "moat-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload and print its figures (one JSON line with --json).
    Run(Box<RunArgs>),
    /// Serve the bare baseline until killed; prints its endpoint.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Serve TLS with a self-signed certificate, written to this file.
        #[arg(long, value_name = "FILE")]
        tls_cert_out: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    endpoint: String,
    /// CA certificates (PEM) trusted for an https endpoint.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: String,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    session_token: Option<String>,
    /// get, put, query, mixed, batch or batchget.
    #[arg(long, default_value = "get")]
    workload: String,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value = "bench")]
    table: String,
    /// Items preloaded for get and mixed.
    #[arg(long, default_value_t = 100_000)]
    items: u64,
    /// Bytes of each get/put item's value.
    #[arg(long, default_value_t = 1000)]
    item_bytes: usize,
    /// Partitions of 10 items preloaded for query.
    #[arg(long, default_value_t = 1000)]
    partitions: u64,
    /// Create the table and load the items first.
    #[arg(long)]
    setup: bool,
    /// The server's process id: its CPU time and peak memory are reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Send at this many requests per second in all (default: as fast as
    /// answers come).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Baseline {
            listen,
            tls_cert_out,
        } => baseline(listen, tls_cert_out).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moat-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn baseline(
    listen: std::net::SocketAddr,
    cert_out: Option<std::path::PathBuf>,
) -> Result<(), String> {
    let (addr, pem) = moat_bench::baseline::start(listen, cert_out.is_some()).await?;
    let scheme = match (&cert_out, pem) {
        (Some(path), Some(pem)) => {
            std::fs::write(path, pem).map_err(|e| e.to_string())?;
            "https"
        }
        _ => "http",
    };
    println!("baseline: serving {scheme}://{addr}");
    std::future::pending::<()>().await;
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), String> {
    let workload = Workload::parse(&args.workload)
        .ok_or_else(|| format!("unknown workload {}", args.workload))?;
    let ca = match &args.ca {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let target = Target::new(
        &args.endpoint,
        ca.as_deref(),
        &args.region,
        &args.access_key_id,
        &args.secret_access_key,
        args.session_token.as_deref(),
    )?;
    let data = Arc::new(Data {
        table: args.table.clone(),
        items: args.items,
        item_bytes: args.item_bytes,
        partitions: args.partitions,
    });
    if args.setup {
        moat_bench::setup(&target, &data, args.connections.min(16)).await?;
    }
    let report = moat_bench::run(
        &target,
        data,
        &RunConfig {
            workload,
            connections: args.connections,
            warmup: Duration::from_secs_f64(args.warmup),
            duration: Duration::from_secs_f64(args.seconds),
            server_pid: args.server_pid,
            rate: args.rate,
        },
    )
    .await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!(
            "{} x{}: {:.0} req/s, p50 {} us, p99 {} us, p99.9 {} us, {} errors{}{}",
            report.workload,
            report.connections,
            report.throughput,
            report.p50_us,
            report.p99_us,
            report.p999_us,
            report.errors,
            report
                .server_cpu_seconds
                .map(|c| format!(", server CPU {c:.2} s"))
                .unwrap_or_default(),
            report
                .server_peak_rss_mb
                .map(|m| format!(", peak RSS {m:.0} MiB"))
                .unwrap_or_default(),
        );
        if let Some(e) = &report.first_error {
            println!("first error: {e}");
        }
    }
    Ok(())
}
