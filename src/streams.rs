//! `cloudlysis streams ensure|check`: create or validate the JetStream streams and print a table.

use std::process::ExitCode;

use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::nats::{self, NatsSettings};
use cloudlysis_runtime::stream::{self, EnsureOutcome, StreamError};

/// What to do with each stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create missing streams, validate existing ones.
    Ensure,
    /// Validate only.
    Check,
}

/// One row of the table.
struct Row {
    stream: String,
    subjects: String,
    storage: String,
    messages: String,
    status: String,
}

/// Connects, ensures or checks every stream, prints the table; non-zero exit when any stream is
/// missing (check) or incompatible, with one line per problem on stderr.
pub async fn run(
    src: &ConfigSource,
    url_flag: Option<&str>,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    let settings = NatsSettings::load(src, url_flag, "cloudlysis-streams")?;
    let client = nats::connect(&settings).await?;
    let js = nats::jetstream(client, settings.request_timeout);
    let (table, problems) = apply(&js, mode).await?;
    print!("{table}");
    for p in &problems {
        eprintln!("error: {p}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ensures or checks every stream; returns the rendered table and the problems (one line each).
pub async fn apply(
    js: &async_nats::jetstream::Context,
    mode: Mode,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut rows = vec![Row {
        stream: "STREAM".into(),
        subjects: "SUBJECTS".into(),
        storage: "STORAGE".into(),
        messages: "MESSAGES".into(),
        status: "STATUS".into(),
    }];
    let mut problems = Vec::new();
    for policy in stream::all() {
        let result = match mode {
            Mode::Ensure => stream::ensure_stream(js, &policy).await,
            Mode::Check => stream::check_stream(js, &policy)
                .await
                .map(|info| (EnsureOutcome::Compatible, info)),
        };
        let row = match result {
            Ok((outcome, info)) => Row {
                stream: policy.name.into(),
                subjects: info.config.subjects.join(","),
                storage: format!("{:?}", info.config.storage).to_lowercase(),
                messages: info.state.messages.to_string(),
                status: match outcome {
                    EnsureOutcome::Created => "created".into(),
                    EnsureOutcome::Compatible => "ok".into(),
                },
            },
            Err(StreamError::Incompatible(inc)) => {
                problems.push(inc.to_string());
                // What the stream is, so the operator sees what it holds (it is left unchanged).
                let info = js
                    .get_stream(policy.name)
                    .await
                    .ok()
                    .map(|s| s.cached_info().clone());
                let dash = || "-".to_string();
                Row {
                    stream: policy.name.into(),
                    subjects: info
                        .as_ref()
                        .map_or_else(dash, |i| i.config.subjects.join(",")),
                    storage: info
                        .as_ref()
                        .map_or_else(dash, |i| format!("{:?}", i.config.storage).to_lowercase()),
                    messages: info
                        .as_ref()
                        .map_or_else(dash, |i| i.state.messages.to_string()),
                    status: format!("incompatible ({})", inc.fields().join(", ")),
                }
            }
            Err(StreamError::Missing { stream }) => {
                problems.push(format!(
                    "stream {stream} does not exist (run `cloudlysis streams ensure`)"
                ));
                Row {
                    stream: policy.name.into(),
                    subjects: policy.subjects.join(","),
                    storage: "-".into(),
                    messages: "-".into(),
                    status: "missing".into(),
                }
            }
            Err(e) => return Err(e.into()),
        };
        rows.push(row);
    }
    Ok((render(&rows), problems))
}

fn render(rows: &[Row]) -> String {
    let width = |f: fn(&Row) -> &str| rows.iter().map(|r| f(r).len()).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (
        width(|r| &r.stream),
        width(|r| &r.subjects),
        width(|r| &r.storage),
        width(|r| &r.messages),
    );
    rows.iter()
        .map(|r| {
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}\n",
                r.stream, r.subjects, r.storage, r.messages, r.status
            )
        })
        .collect()
}
