//! Command-line surface. Every setting is also settable by env and in the `--config` TOML file
//! (flags over env over file over defaults); `--help` names the env var and file key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use cloudlysis_actors::aggregate::node::{self as aggregate_node, GRPC_ADDR};
use cloudlysis_gateway::config as gw_config;
use cloudlysis_runtime::config::{ConfigSource, Setting, settings};
use cloudlysis_runtime::consumer::settings as consumer_settings;

/// Cloudlysis: an actor-system runtime for event-sourced, multi-tenant services.
#[derive(Debug, Parser)]
#[command(name = "cloudlysis", version, about, long_about = None)]
pub struct Cli {
    /// TOML config file (flags and env override it) [env: CLOUDLYSIS_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Gateway (HTTP edge: authn, deny-by-default authz, routing to nodes)
    Gateway(GatewayArgs),
    /// Run an Aggregate node (commands → events on JetStream)
    Aggregate(AggregateArgs),
    /// Run a Projection node (events → views in KV, QueryService), or rebuild a view
    Projection(ProjectionCommand),
    /// Run a Runner node (workflows, effects, outbox relay, durable timers)
    Runner(RunnerArgs),
    /// Run the whole platform on this machine, starting a NATS server for you
    Dev(DevArgs),
    /// Run a Gateway and an aggregate, a projection and a runner node in one process (a
    /// deployment: the Gateway calls its nodes in process; secrets and NATS are configured)
    All(AllArgs),
    /// Load generators: `bench commands` (command path vs raw JetStream publish), `bench views`
    /// (event path vs a raw pull consumer), `bench workflows` (sagas vs the command path)
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Mint a bearer token for a tenant and rights (secret from CLOUDLYSIS_JWT_SECRET)
    Token(TokenArgs),
    /// Sign a node credential (60 s) for calling a node's gRPC services directly, e.g. with
    /// grpcurl -H "x-cloudlysis-credential: $(cloudlysis credential --rights admin:read)"
    /// (secret from CLOUDLYSIS_NODE_SECRET)
    Credential(CredentialArgs),
    /// Create or validate the JetStream streams
    Streams {
        #[command(subcommand)]
        action: StreamsAction,
    },
    /// Poison records: list, show (with the original message), redrive, purge — through a
    /// projection node's OpsAdmin, audited with --actor
    Poison(PoisonArgs),
}

#[derive(Debug, Args)]
pub struct PoisonArgs {
    #[command(subcommand)]
    pub action: PoisonAction,
    /// gRPC address of a projection node [default: http://127.0.0.1:50052]
    #[arg(long, value_name = "URI", global = true)]
    pub node_addr: Option<String>,
    /// Who acts, for the audit trail [default: $USER]
    #[arg(long, value_name = "NAME", global = true)]
    pub actor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PoisonAction {
    /// List records, oldest first (one JSON object a line)
    List {
        /// Only records of this view, effect type, workflow or consumer
        #[arg(long)]
        source: Option<String>,
        /// Most records to print (at most 500)
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One record with its headers and original message (JSON)
    Show { id: String },
    /// Apply the message again through its handler; the record goes when it applies
    Redrive { id: String },
    /// Remove the record without applying the message
    Purge { id: String },
}

#[derive(Debug, Args)]
pub struct NatsArgs {
    #[arg(long, value_name = "URL", help = settings::NATS_URL.help())]
    pub nats_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunnerArgs {
    #[arg(long, value_name = "URL", help = settings::NATS_URL.help())]
    pub nats_url: Option<String>,
    #[arg(long, value_name = "ADDR", help = cloudlysis_actors::runner::GRPC_ADDR.help())]
    pub grpc_addr: Option<String>,
    #[arg(long, value_name = "URI", help = cloudlysis_actors::runner::AGGREGATE_ADDR.help())]
    pub aggregate_addr: Option<String>,
    /// Listen address of /health /ready /metrics [default: 127.0.0.1:8083] [env: CLOUDLYSIS_HTTP_ADDR] [file: http.addr]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct AllArgs {
    #[arg(long, value_name = "URL", help = settings::NATS_URL.help())]
    pub nats_url: Option<String>,
    /// Listen address of the Gateway's HTTP API and /health /ready /metrics [default: 127.0.0.1:8080] [env: CLOUDLYSIS_HTTP_ADDR] [file: http.addr]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct AggregateArgs {
    #[arg(long, value_name = "URL", help = settings::NATS_URL.help())]
    pub nats_url: Option<String>,
    #[arg(long, value_name = "ADDR", help = GRPC_ADDR.help())]
    pub grpc_addr: Option<String>,
    /// Listen address of /health /ready /metrics [default: 127.0.0.1:8081] [env: CLOUDLYSIS_HTTP_ADDR] [file: http.addr]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProjectionCommand {
    #[command(subcommand)]
    pub action: Option<ProjectionAction>,
    #[command(flatten)]
    pub run: ProjectionArgs,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionAction {
    /// Rebuild a view from the start of the event stream; the current view answers queries
    /// until the rebuilt one has caught up, then every node switches to it
    Rebuild(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The view to rebuild (one this binary's projection node runs, e.g. balances)
    pub view: String,
    #[arg(long, value_name = "URL", help = settings::NATS_URL.help())]
    pub nats_url: Option<String>,
    /// Return once the rebuild is requested instead of waiting until it is live
    #[arg(long)]
    pub no_wait: bool,
    /// Abandon the rebuild in progress instead of starting one (the half-built generation is
    /// retired; the active one keeps answering)
    #[arg(long, conflicts_with = "no_wait")]
    pub cancel: bool,
    /// How long to wait for the rebuilt view to go live: 90s, 15m, 1h
    #[arg(long, default_value = "10m")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct ProjectionArgs {
    #[arg(long, value_name = "URL", help = settings::NATS_URL.help())]
    pub nats_url: Option<String>,
    #[arg(long, value_name = "ADDR", help = cloudlysis_actors::projection::GRPC_ADDR.help())]
    pub grpc_addr: Option<String>,
    #[arg(long, value_name = "MODE", help = cloudlysis_actors::projection::MODE.help())]
    pub mode: Option<String>,
    #[arg(long, value_name = "N", help = cloudlysis_actors::projection::LANES.help())]
    pub lanes: Option<String>,
    /// Listen address of /health /ready /metrics [default: 127.0.0.1:8082] [env: CLOUDLYSIS_HTTP_ADDR] [file: http.addr]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Listen address of the HTTP API [default: 127.0.0.1:8080] [env: CLOUDLYSIS_HTTP_ADDR] [file: http.addr]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
    #[arg(long, value_name = "URI", help = gw_config::AGGREGATE_ADDR.help())]
    pub aggregate_addr: Option<String>,
    #[arg(long, value_name = "URI", help = gw_config::PROJECTION_ADDR.help())]
    pub projection_addr: Option<String>,
    #[arg(long, value_name = "URI", help = gw_config::RUNNER_ADDR.help())]
    pub runner_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Tenant the token acts for
    #[arg(long)]
    pub tenant: String,
    /// Comma-separated rights, e.g. commands:account,queries:*
    #[arg(long, default_value = "")]
    pub rights: String,
    /// Validity: 90s, 15m, 1h, 7d
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Subject (who the token is for)
    #[arg(long, default_value = "cli")]
    pub subject: String,
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// Tenant the credential acts for (admin calls act for none: the default)
    #[arg(long, default_value = cloudlysis_runtime::credential::SYSTEM_TENANT)]
    pub tenant: String,
    /// Comma-separated rights, e.g. admin:read or commands:account
    #[arg(long, default_value = "")]
    pub rights: String,
    /// Subject (who calls; nodes record it in audit records)
    #[arg(long, default_value = "cli")]
    pub subject: String,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Use this NATS server instead of starting one [env: CLOUDLYSIS_NATS_URL] [file: nats.url]
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Listen address of the HTTP endpoints [default: 127.0.0.1:8080] [env: CLOUDLYSIS_HTTP_ADDR] [file: http.addr]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
    #[arg(long, value_name = "DIR", help = settings::DEV_DATA_DIR.help())]
    pub data_dir: Option<PathBuf>,
    /// Start a 3-node NATS cluster on this machine instead of one server; streams and KV buckets
    /// get 3 replicas (nats.replicas = 3)
    #[arg(long)]
    pub cluster: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Commands/s and latency through gateway → aggregate → JetStream vs raw JetStream publish
    Commands(crate::bench::BenchArgs),
    /// Events/s a view applies vs a raw pull consumer; command → visible-in-view latency
    Views(crate::bench_views::ViewBenchArgs),
    /// Completed transfer sagas/s and start → completed latency vs the command path
    Workflows(crate::bench_workflows::WorkflowBenchArgs),
    /// A steady tenant's rejections and latency while another floods the Gateway
    Fairness(crate::bench_fairness::FairnessBenchArgs),
    /// An entity's first command on a fresh node against its history length, with and
    /// without snapshots
    Rehydration(crate::bench_rehydration::RehydrationBenchArgs),
    /// The command path over a real HTTP socket at rest, at capacity and under N x overload:
    /// goodput, refusals with Retry-After, accepted latency, memory
    Overload(crate::bench_overload::OverloadBenchArgs),
    /// What a live entity costs: opens of new entities against deposits to live ones, and
    /// resident memory per live entity
    Entities(crate::bench_entities::EntitiesBenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum StreamsAction {
    /// Create missing streams, validate existing ones (never changes an existing stream)
    Ensure(NatsArgs),
    /// Validate the streams without creating anything
    Check(NatsArgs),
}

/// Every setting a config file may hold.
pub fn known_settings() -> Vec<&'static Setting> {
    let mut all: Vec<&'static Setting> = KNOWN_SETTINGS.to_vec();
    all.extend_from_slice(aggregate_node::SETTINGS);
    all.push(&cloudlysis_actors::projection::GRPC_ADDR);
    all.push(&cloudlysis_actors::projection::MODE);
    all.push(&cloudlysis_actors::projection::LANES);
    all.extend_from_slice(cloudlysis_actors::runner::SETTINGS);
    all.extend_from_slice(gw_config::ALL);
    all.extend_from_slice(cloudlysis_runtime::tls::SETTINGS);
    all
}

const KNOWN_SETTINGS: &[&Setting] = &[
    &settings::NATS_URL,
    &settings::NATS_CONNECT_TIMEOUT_MS,
    &settings::NATS_REQUEST_TIMEOUT_MS,
    &settings::NATS_PING_INTERVAL_MS,
    &settings::NATS_REPLICAS,
    &settings::HTTP_ADDR,
    &settings::HTTP_HEADER_READ_TIMEOUT_MS,
    &settings::HTTP_MAX_CONNECTIONS,
    &settings::DEV_DATA_DIR,
    &cloudlysis_runtime::credential::NODE_SECRET,
    &cloudlysis_runtime::credential::NODE_SECRET_PREVIOUS,
    &cloudlysis_runtime::admission::MAX_IN_FLIGHT,
    &cloudlysis_runtime::registry::ADVERTISE_ADDR,
    &cloudlysis_runtime::registry::AGGREGATE_ADVERTISE_ADDR,
    &cloudlysis_runtime::registry::PROJECTION_ADVERTISE_ADDR,
    &cloudlysis_runtime::registry::RUNNER_ADVERTISE_ADDR,
    &cloudlysis_runtime::registry::LEAVE_GRACE,
    &consumer_settings::PROJECTION_ACK_TIMEOUT_MS,
    &consumer_settings::PROJECTION_MAX_DELIVER,
    &consumer_settings::PROJECTION_MAX_IN_FLIGHT,
    &consumer_settings::PROJECTION_DELIVER_GROUP,
    &consumer_settings::RUNNER_ACK_TIMEOUT_MS,
    &consumer_settings::RUNNER_MAX_DELIVER,
    &consumer_settings::RUNNER_MAX_IN_FLIGHT,
    &consumer_settings::RUNNER_DELIVER_GROUP,
];

/// Loads the layered config source: process env plus the `--config` file (or
/// `CLOUDLYSIS_CONFIG`), refusing unknown file keys.
pub fn config_source(flag: Option<&PathBuf>) -> anyhow::Result<ConfigSource> {
    let src = ConfigSource::from_process_env();
    let path = config_path(flag);
    let src = match path {
        Some(p) => src.with_file(&p)?,
        None => src,
    };
    src.reject_unknown_keys(&known_settings())?;
    Ok(src)
}

/// The config file in use: `--config`, else `CLOUDLYSIS_CONFIG`.
fn config_path(flag: Option<&PathBuf>) -> Option<PathBuf> {
    flag.cloned()
        .or_else(|| std::env::var_os("CLOUDLYSIS_CONFIG").map(PathBuf::from))
}

/// Parses a command line for the binary `name` (its `--help` and errors say `name`).
pub fn parse<I, T>(name: &'static str, args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command()
        .name(name)
        .bin_name(name)
        .try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Runs a parsed command line for `app`.
pub async fn run(cli: Cli, app: std::sync::Arc<crate::App>) -> anyhow::Result<ExitCode> {
    let src = config_source(cli.config.as_ref())?;
    // Before any actor or consumer exists: metric handles made earlier would record nowhere.
    cloudlysis_runtime::metrics::install()?;
    // Span export when the OTEL_* environment asks for it; flushed when this returns.
    let role = match &cli.command {
        Command::Dev(_) => "dev",
        Command::All(_) => "all",
        Command::Gateway(_) => "gateway",
        Command::Aggregate(_) => "aggregate",
        Command::Projection(_) => "projection",
        Command::Runner(_) => "runner",
        _ => "cli",
    };
    let _telemetry = cloudlysis_runtime::telemetry::init(role)?;
    if role != "cli" {
        // Every HTTP server's limits, refused before anything starts.
        crate::nodes::http_limits(&src)?;
    }
    match cli.command {
        Command::Streams { action } => match action {
            StreamsAction::Ensure(args) => {
                crate::streams::run(&src, args.nats_url.as_deref(), crate::streams::Mode::Ensure)
                    .await
            }
            StreamsAction::Check(args) => {
                crate::streams::run(&src, args.nats_url.as_deref(), crate::streams::Mode::Check)
                    .await
            }
        },
        Command::Dev(args) => crate::dev::run(&src, args, &app).await,
        Command::All(args) => {
            crate::all::run(&src, args, config_path(cli.config.as_ref()), &app).await
        }
        Command::Gateway(args) => crate::roles::gateway(&src, args).await,
        Command::Aggregate(args) => crate::roles::aggregate(&src, args, &app).await,
        Command::Token(args) => crate::roles::token(&src, args),
        Command::Credential(args) => crate::roles::credential(&src, args),
        Command::Bench(BenchCommand::Commands(args)) => crate::bench::run(&src, args).await,
        Command::Bench(BenchCommand::Views(args)) => crate::bench_views::run(&src, args).await,
        Command::Bench(BenchCommand::Workflows(args)) => {
            crate::bench_workflows::run(&src, args).await
        }
        Command::Bench(BenchCommand::Fairness(args)) => {
            crate::bench_fairness::run(&src, args).await
        }
        Command::Bench(BenchCommand::Rehydration(args)) => {
            crate::bench_rehydration::run(&src, args).await
        }
        Command::Bench(BenchCommand::Overload(args)) => {
            crate::bench_overload::run(&src, args).await
        }
        Command::Bench(BenchCommand::Entities(args)) => {
            crate::bench_entities::run(&src, args).await
        }
        Command::Projection(ProjectionCommand {
            action: Some(ProjectionAction::Rebuild(args)),
            ..
        }) => crate::roles::rebuild(&src, args, &app).await,
        Command::Projection(ProjectionCommand { action: None, run }) => {
            crate::roles::projection(&src, run, &app).await
        }
        Command::Runner(args) => {
            crate::roles::runner(&src, args, config_path(cli.config.as_ref()), &app).await
        }
        Command::Poison(args) => crate::poison::run(&src, args).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_documented_in_the_operations_guide() {
        let guide = include_str!("../docs/operations.md");
        for setting in super::known_settings() {
            assert!(
                guide.contains(&format!("`{}`", setting.key))
                    && guide.contains(&format!("`{}`", setting.env)),
                "{} ({}) is not in docs/operations.md",
                setting.key,
                setting.env
            );
        }
    }
}
