//! The command line. Every `serve` setting can also come from an environment
//! variable or the configuration file; a flag wins over the environment, which
//! wins over the file, which wins over the default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "moat",
    version,
    about = "Moat: a self-hosted database cloud behind the AWS APIs",
    long_about = "Moat: a self-hosted database cloud behind the AWS APIs.\n\n\
        Point the AWS CLI, boto3 or any AWS SDK at Moat's endpoint and use DynamoDB, STS and \
        the other services as you would on AWS: every request is signed (SigV4), every \
        connection is TLS, and every request is written to an audit log.\n\n\
        Start with `moat serve`: on first start it creates its data directory, a certificate \
        authority, the account's root credentials and an AWS CLI profile named `moat`, and it \
        prints the lines to paste into your shell to connect."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Moat: the HTTPS endpoint for every AWS API, until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Re-wrap every key of a data directory under a new master key (Moat
    /// must be stopped). Data is not rewritten; afterwards the old master key
    /// opens nothing, and Moat starts only with the new one.
    RotateMasterKey(RotateArgs),
    /// Print an object of the object store (a backup's, an export's) as
    /// plaintext: decrypted with the master key, and gunzipped if its name
    /// ends in `.gz`. Reading an export's data files is what it is for.
    ReadObject(ReadObjectArgs),
}

#[derive(Debug, Args)]
pub struct ReadObjectArgs {
    /// The data directory [default: as for `moat serve`].
    #[arg(long, env = "MOAT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The master key file [default: DATA_DIR/keys/master.key].
    #[arg(long, env = "MOAT_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,

    /// The object store directory [default: DATA_DIR/objects].
    #[arg(long, value_name = "DIR")]
    pub object_store_dir: Option<PathBuf>,

    /// The object's key, e.g. `s3/BUCKET/PREFIX/AWSDynamoDB/ID/data/00000.json.gz`.
    pub key: String,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The data directory [default: as for `moat serve`].
    #[arg(long, env = "MOAT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The current master key file [default: DATA_DIR/keys/master.key].
    #[arg(long, env = "MOAT_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,

    /// The new master key file; created (32 random bytes, 0600) if it does not exist.
    #[arg(long, value_name = "FILE")]
    pub new_master_key_file: PathBuf,

    /// The object store directory, whose backup and export keys are
    /// re-wrapped too [default: DATA_DIR/objects].
    #[arg(long, value_name = "DIR")]
    pub object_store_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where Moat keeps its state, keys, certificates and audit log
    /// [default: $XDG_DATA_HOME/moat, else ~/.local/share/moat].
    #[arg(long, env = "MOAT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The master key file (32 bytes, or 64 hexadecimal characters); the
    /// environment variable MOAT_MASTER_KEY may give the key itself instead
    /// [default: DATA_DIR/keys/master.key, created on first start].
    #[arg(long, env = "MOAT_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Address and port of the API endpoint [default: 127.0.0.1:4566].
    #[arg(long, env = "MOAT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// The default region, written into the `moat` CLI profile [default: us-east-1].
    #[arg(long, env = "MOAT_REGION", value_name = "REGION")]
    pub region: Option<String>,

    /// Regions served besides the default one, comma-separated
    /// [default: the AWS commercial regions].
    #[arg(long, env = "MOAT_REGIONS", value_name = "LIST", value_delimiter = ',')]
    pub regions: Option<Vec<String>>,

    /// A TOML configuration file [default: DATA_DIR/moat.toml, if present].
    #[arg(long, env = "MOAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Your own server certificate chain (PEM), instead of the one Moat issues.
    #[arg(long, env = "MOAT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "MOAT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Another host name or IP address for Moat's generated server certificate
    /// (repeatable; localhost, 127.0.0.1 and ::1 are always included).
    #[arg(
        long = "tls-name",
        env = "MOAT_TLS_NAMES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_names: Option<Vec<String>>,

    /// Serve plain HTTP instead of HTTPS. Refused unless --listen is a loopback address.
    #[arg(long, env = "MOAT_PLAIN_HTTP")]
    pub plain_http: bool,

    /// Serve Prometheus metrics (and /health) over plain HTTP on this address [default: off].
    #[arg(long, env = "MOAT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log level or filter (error, warn, info, debug, trace); RUST_LOG takes precedence
    /// [default: info].
    #[arg(long, env = "MOAT_LOG", value_name = "LEVEL")]
    pub log_level: Option<String>,
}
