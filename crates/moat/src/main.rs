//! `moat`: the binary, and the composition root that wires every crate together.
//!
//! It parses the command line and configuration, prepares the data directory
//! (first start), builds the edge and its listeners, and shuts them down
//! gracefully on SIGTERM or Ctrl-C. No request handling lives here.

mod cli;
mod config;
mod iam_state;
mod init;
mod lock;
mod oidc;
mod vault;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use moat_edge::audit::{AuditConfig, AuditLog};
use moat_edge::server::{self, ListenerConfig};
use moat_edge::{Edge, EdgeConfig, Services};
use moat_iam::Iam;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::Settings;

/// Rust's allocations go to mimalloc: the request path allocates many small
/// short-lived values on one thread and frees some on another, where glibc's
/// arenas took 15% of a request's CPU, much of it in lock contention.
/// With mimalloc: GetItem +23%, PutItem +16% on 16 connections, +50% on 64
/// (BENCHMARKS.md). SQLite's own allocations still go to glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tune_allocators();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = match Settings::resolve(*args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("moat: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&settings.log_level);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("moat: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("moat: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ReadObject(args) => {
            use std::io::Write;
            let data_dir = args.data_dir.unwrap_or_else(config::default_data_dir);
            match vault::read_object(
                &data_dir,
                args.master_key_file.as_deref(),
                args.object_store_dir.as_deref(),
                &args.key,
            ) {
                Ok(bytes) => {
                    let _ = std::io::stdout().write_all(&bytes);
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("moat: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::RotateMasterKey(args) => {
            let data_dir = args.data_dir.unwrap_or_else(config::default_data_dir);
            match vault::rotate(
                &data_dir,
                args.master_key_file.as_deref(),
                &args.new_master_key_file,
                args.object_store_dir.as_deref(),
            ) {
                Ok(n) => {
                    println!(
                        "moat: re-wrapped {n} key(s) under {}; start Moat with --master-key-file {}",
                        args.new_master_key_file.display(),
                        args.new_master_key_file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("moat: {message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(settings: Settings) -> Result<(), String> {
    let _lock = lock::lock_data_dir(&settings.data_dir)?;
    let user_tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let master = vault::load_master(
        &settings.data_dir,
        settings.master_key_file.as_deref(),
        settings.master_key_pkcs11.as_ref(),
    )?;
    let (keys, system_db) = vault::open(&settings.data_dir, master)?;
    let keys = Arc::new(keys);
    let boot = init::prepare(
        &settings.data_dir,
        &settings.tls_names,
        user_tls,
        init::RootOverride::from_env(),
        &init::Secrets { db: &system_db },
    )
    .map_err(|e| e.to_string())?;

    let tls = if settings.plain_http {
        None
    } else {
        Some(
            moat_edge::tls::server_config(&boot.cert_chain_pem, &boot.key_pem)
                .map_err(|e| format!("TLS: {e}"))?,
        )
    };

    let audit = AuditLog::open(AuditConfig {
        dir: settings.data_dir.join("audit"),
        max_file_bytes: settings.audit_max_file_bytes,
        keep_files: settings.audit_keep_files,
    })
    .map_err(|e| format!("cannot open the audit log: {e}"))?;

    let iam = Iam::open(
        boot.root_key.clone(),
        Box::new(iam_state::StoredState::new(
            system_db.clone(),
            settings.data_dir.join("state/iam.json"),
        )),
    )
    .map_err(|e| e.to_string())?;
    let jwks = oidc::Jwks::new(
        std::fs::read(&settings.oidc_ca_bundle).ok(),
        settings.oidc_jwks_files.clone(),
    );
    let kms = Arc::new(moat_kms::Kms::new(
        system_db.clone(),
        keys.clone(),
        boot.account.as_str(),
    ));
    spawn_kms_maintenance(kms.clone(), settings.regions.clone());
    moat_store::set_read_cache_budget(settings.item_cache_bytes);
    let tables = Arc::new(moat_dynamodb::tables::Tables::new(
        settings.data_dir.join("dynamodb"),
        system_db.clone(),
        Arc::new(vault::TableKeyring(keys.clone())),
        settings.object_store.open()?,
    ));
    // Transactions a crash interrupted after they were decided are finished first.
    let finished = tables
        .recover()
        .map_err(|e| format!("cannot finish interrupted transactions: {e}"))?;
    if finished > 0 {
        tracing::info!(finished, "finished interrupted DynamoDB transactions");
    }
    // An export runs on a thread of its own; one a stop cut short failed.
    tables
        .fail_interrupted_exports()
        .map_err(|e| format!("cannot record interrupted exports: {e}"))?;
    // So does an index backfill; one a stop cut short starts again.
    let resumed = tables
        .resume_backfills()
        .map_err(|e| format!("cannot resume index backfills: {e}"))?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed filling in new indexes");
    }
    spawn_ttl_sweeper(tables.clone());
    spawn_backup_plans(tables.clone(), settings.backup_plans.clone());
    let edge = Arc::new(Edge::new(
        EdgeConfig {
            regions: settings.regions.clone(),
            max_body_bytes: settings.max_body_bytes,
            body_read_timeout: settings.body_read_timeout,
        },
        Services {
            iam: Arc::new(iam),
            kms,
            tables,
            jwks: Arc::new(jwks),
        },
        audit.clone(),
    ));

    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let endpoint = init::endpoint_url(local, tls.is_some());
    let export_line = init::write_cli_profile(
        &settings.data_dir,
        &endpoint,
        &settings.region,
        &boot.root_key,
        boot.ca_path.as_deref(),
    )
    .map_err(|e| e.to_string())?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_task = match settings.metrics_listen {
        Some(addr) => {
            let metrics_listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
            let metrics_addr = metrics_listener.local_addr().map_err(|e| e.to_string())?;
            println!("moat: metrics at http://{metrics_addr}/metrics");
            let edge = edge.clone();
            let stop = wait_for(stop_rx.clone());
            Some(tokio::spawn(server::run_metrics(
                metrics_listener,
                edge,
                stop,
            )))
        }
        None => None,
    };

    println!(
        "moat: serving {endpoint} (account {}, region {})",
        boot.account, settings.region
    );
    println!("moat: to connect, run:");
    println!("  {export_line}");
    println!("  aws --profile moat sts get-caller-identity");
    tracing::info!(%endpoint, data_dir = %settings.data_dir.display(), "moat started");

    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });

    server::run(
        listener,
        edge,
        ListenerConfig {
            tls,
            handshake_timeout: settings.handshake_timeout,
            header_read_timeout: settings.header_read_timeout,
            max_header_bytes: 64 * 1024,
            max_connections: settings.max_connections,
            shutdown_grace: Duration::from_secs(30),
        },
        wait_for(stop_rx),
    )
    .await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    audit.close().await;
    tracing::info!("moat stopped");
    Ok(())
}

/// Scheduled KMS work: automatic key rotation when due, and deleting keys
/// whose waiting period has ended. Runs at start and then every hour.
fn spawn_kms_maintenance(kms: Arc<moat_kms::Kms>, regions: Vec<String>) {
    tokio::spawn(async move {
        let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every_hour.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            for region in &regions {
                if let Err(e) = kms.rotate_due(region, now) {
                    tracing::error!(%region, error = %e, "scheduled KMS key rotation failed");
                }
                if let Err(e) = kms.delete_due(region, now) {
                    tracing::error!(%region, error = %e, "deleting KMS keys past their waiting period failed");
                }
            }
        }
    });
}

/// DynamoDB TTL (removing expired items) and point-in-time recovery upkeep,
/// in the background every minute.
fn spawn_ttl_sweeper(tables: Arc<moat_dynamodb::tables::Tables>) {
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            every_minute.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let tables = tables.clone();
            // TTL, then point-in-time recovery's daily re-basing and pruning.
            let work = move || {
                tables.sweep_expired(now)?;
                tables.maintain_pitr(Duration::from_secs(24 * 3600))
            };
            match tokio::task::spawn_blocking(work).await {
                Ok(Err(e)) => tracing::error!(error = %e, "removing expired items failed"),
                Err(e) => tracing::error!(error = %e, "the TTL sweeper failed"),
                Ok(Ok(_)) => {}
            }
        }
    });
}

/// Runs the configured backup plans when they are due (checked every second).
fn spawn_backup_plans(
    tables: Arc<moat_dynamodb::tables::Tables>,
    plans: Vec<moat_dynamodb::backups::BackupPlan>,
) {
    if plans.is_empty() {
        return;
    }
    let plans = Arc::new(plans);
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        let mut run: u64 = 0;
        loop {
            every_second.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let tables = tables.clone();
            let plans = plans.clone();
            run += 1;
            let work = move || {
                for plan in moat_dynamodb::backups::due_plans(&tables, &plans, now) {
                    let id = format!("{:013}-plan{run:06}", (now * 1000.0) as u64);
                    match tables.run_plan(plan, &id, now) {
                        Ok(b) => {
                            tracing::info!(plan = %plan.name, backup = %b.arn, stored_bytes = b.stored_bytes, "backup plan ran")
                        }
                        Err(e) => {
                            tracing::error!(plan = %plan.name, error = %e, "backup plan failed")
                        }
                    }
                }
            };
            if let Err(e) = tokio::task::spawn_blocking(work).await {
                tracing::error!(error = %e, "the backup plan runner failed");
            }
        }
    });
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Keeps both allocators' idle memory small (the target: under 300 MB with
/// a million items stored). Called first, before any other thread exists.
///
/// glibc (which serves SQLite's allocations) gives each thread that meets a
/// busy arena a new one, up to eight per core, and each keeps the memory
/// freed into it. With the default, and with Rust's allocations still on
/// glibc, a million-item table held 380 MiB resident instead of 230.
fn tune_allocators() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // mimalloc hands pages freed by a thread back to the system after a
    // delay (a second by default), so bursts of requests on many blocking
    // threads left their pages resident meanwhile: 248 against 217 MiB at the
    // peak with a million items (BENCHMARKS.md). At once (no delay) was
    // worse the other way: where a request's pages fell empty between
    // requests, each request faulted them in again, and BatchWriteItem spent
    // 14% of its samples in madvise and page faults (17% slower). A tenth of
    // a second keeps pages that the next requests reuse, and the peak with a
    // million items where it was (253 against 258 MiB).
    // SAFETY: sets one of the allocator's options, which it reads at each purge.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

/// How long mimalloc keeps a freed page before returning it (see above).
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (its 16th option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
