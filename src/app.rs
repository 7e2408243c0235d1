//! The application builder: a developer's own Cloudlysis binary in about five lines.
//!
//! ```no_run
//! use cloudlysis::App;
//! # use cloudlysis_examples::{account::Account, balances::Balances};
//!
//! fn main() -> std::process::ExitCode {
//!     App::new("bank").aggregate::<Account>().view::<Balances>().main()
//! }
//! ```
//!
//! [`App::main`] provides every role subcommand (`gateway`, `aggregate`, `projection`, `runner`,
//! `dev`, `streams`, `token`, `credential`, `poison`, `bench`), their settings, signals and
//! shutdown. A node serves only the behaviours registered for its role: aggregates on
//! `aggregate` nodes, views on `projection` nodes, workflows and effects on `runner` nodes.
//! Registrations are checked before any role starts ([`App::validate`]); an error names the
//! behaviour.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use cloudlysis_actors::aggregate::Aggregate;
use cloudlysis_actors::aggregate::node::AggregateNodeBuilder;
use cloudlysis_actors::projection::view::View;
use cloudlysis_actors::projection::{ProjectionNodeBuilder, TypedView, TypedViewOf};
use cloudlysis_actors::runner::{CommandClient, Effect, RunnerNodeBuilder, Workflow};
use cloudlysis_runtime::subject::validate_token;

/// A registration the builder refuses, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// A behaviour's name is not a subject token (`[A-Za-z0-9_-]`, 1..=64 bytes) or is reserved.
    #[error("{kind} `{name}`: invalid name: {reason}")]
    InvalidName {
        /// `aggregate`, `view`, `workflow` or `effect`.
        kind: &'static str,
        /// The name as registered.
        name: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// Two behaviours of one kind share a name.
    #[error("{kind} `{name}` is registered twice")]
    Duplicate {
        /// `aggregate`, `view`, `workflow` or `effect`.
        kind: &'static str,
        /// The shared name.
        name: &'static str,
    },
    /// A view follows an aggregate type this application does not register.
    #[error(
        "view `{view}` follows aggregate type `{aggregate}`, which is not registered (registered: {registered})"
    )]
    UnknownAggregate {
        /// The view.
        view: &'static str,
        /// The aggregate type it names.
        aggregate: &'static str,
        /// The registered aggregate types, comma-separated.
        registered: String,
    },
    /// A view follows no aggregate type at all.
    #[error("view `{0}` follows no aggregate type")]
    FollowsNothing(&'static str),
}

type RegisterAggregate = fn(AggregateNodeBuilder) -> AggregateNodeBuilder;
type RegisterView = fn(ProjectionNodeBuilder) -> ProjectionNodeBuilder;
type RegisterWorkflow = fn(RunnerNodeBuilder) -> RunnerNodeBuilder;
type RegisterEffect =
    Arc<dyn Fn(RunnerNodeBuilder, CommandClient) -> RunnerNodeBuilder + Send + Sync>;

/// Prints what to try once `dev` runs: given the Gateway's URL and a dev token.
pub type DevHints = fn(http: &str, token: &str) -> String;

/// The behaviours an application registers, by role.
#[derive(Clone, Default)]
pub struct Behaviours {
    aggregates: Vec<(&'static str, RegisterAggregate)>,
    views: Vec<(&'static str, &'static [&'static str], RegisterView)>,
    workflows: Vec<(&'static str, RegisterWorkflow)>,
    effects: Vec<(&'static str, RegisterEffect)>,
}

impl std::fmt::Debug for Behaviours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviours")
            .field("aggregates", &self.aggregate_types())
            .field("views", &self.view_names())
            .field("workflows", &self.workflow_names())
            .field("effects", &self.effect_types())
            .finish()
    }
}

impl Behaviours {
    /// Aggregate types, in registration order.
    pub fn aggregate_types(&self) -> Vec<&'static str> {
        self.aggregates.iter().map(|(n, _)| *n).collect()
    }

    /// View names, in registration order.
    pub fn view_names(&self) -> Vec<&'static str> {
        self.views.iter().map(|(n, _, _)| *n).collect()
    }

    /// Workflow names, in registration order.
    pub fn workflow_names(&self) -> Vec<&'static str> {
        self.workflows.iter().map(|(n, _)| *n).collect()
    }

    /// Effect types, in registration order.
    pub fn effect_types(&self) -> Vec<&'static str> {
        self.effects.iter().map(|(n, _)| *n).collect()
    }

    /// True when the runner role has anything to run.
    pub fn has_runner_behaviours(&self) -> bool {
        !self.workflows.is_empty() || !self.effects.is_empty()
    }

    /// Registers every aggregate on an aggregate node.
    pub fn register_aggregates(&self, mut b: AggregateNodeBuilder) -> AggregateNodeBuilder {
        for (_, register) in &self.aggregates {
            b = register(b);
        }
        b
    }

    /// Registers every view on a projection node.
    pub fn register_views(&self, mut b: ProjectionNodeBuilder) -> ProjectionNodeBuilder {
        for (_, _, register) in &self.views {
            b = register(b);
        }
        b
    }

    /// Registers every workflow and effect on a runner node; effects send their commands
    /// through `client`.
    pub fn register_runner(
        &self,
        mut b: RunnerNodeBuilder,
        client: &CommandClient,
    ) -> RunnerNodeBuilder {
        for (_, register) in &self.workflows {
            b = register(b);
        }
        for (_, register) in &self.effects {
            b = register(b, client.clone());
        }
        b
    }

    /// Checks every registration: names are subject tokens, no name is registered twice
    /// within its kind, and every view follows registered aggregate types.
    pub fn validate(&self) -> Result<(), RegistrationError> {
        fn names(
            kind: &'static str,
            names: impl IntoIterator<Item = &'static str>,
        ) -> Result<(), RegistrationError> {
            let mut seen = BTreeSet::new();
            for name in names {
                validate_token(name).map_err(|e| RegistrationError::InvalidName {
                    kind,
                    name,
                    reason: e.to_string(),
                })?;
                if name.starts_with('_') {
                    return Err(RegistrationError::InvalidName {
                        kind,
                        name,
                        reason: "names starting with `_` are reserved".into(),
                    });
                }
                if !seen.insert(name) {
                    return Err(RegistrationError::Duplicate { kind, name });
                }
            }
            Ok(())
        }
        names("aggregate", self.aggregate_types())?;
        names("view", self.view_names())?;
        names("workflow", self.workflow_names())?;
        names("effect", self.effect_types())?;
        let aggregates = self.aggregate_types();
        for (view, follows, _) in &self.views {
            if follows.is_empty() {
                return Err(RegistrationError::FollowsNothing(view));
            }
            if let Some(unknown) = follows.iter().find(|t| !aggregates.contains(t)) {
                return Err(RegistrationError::UnknownAggregate {
                    view,
                    aggregate: unknown,
                    registered: aggregates.join(", "),
                });
            }
        }
        Ok(())
    }
}

/// A Cloudlysis application: its name (the binary's), its behaviours, and what `dev` prints.
#[derive(Clone, Debug)]
pub struct App {
    name: &'static str,
    behaviours: Behaviours,
    dev_hints: Option<DevHints>,
}

impl App {
    /// An application without behaviours; `name` is the binary's name in `--help`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            behaviours: Behaviours::default(),
            dev_hints: None,
        }
    }

    /// Registers an aggregate: `aggregate` nodes take its commands.
    pub fn aggregate<A: Aggregate>(mut self) -> Self {
        self.behaviours
            .aggregates
            .push((A::TYPE, |b| b.register::<A>()));
        self
    }

    /// Registers a view: `projection` nodes keep it and answer its queries.
    pub fn view<V: View>(mut self) -> Self {
        self.behaviours
            .views
            .push((V::NAME, V::aggregate_types(), |b| b.register::<V>()));
        self
    }

    /// Registers a typed view (a [`TypedView`] over one aggregate type, folding its decoded
    /// events): `projection` nodes keep it and answer its queries.
    pub fn typed_view<V: TypedView>(self) -> Self {
        self.view::<TypedViewOf<V>>()
    }

    /// Registers a workflow: `runner` nodes run its instances.
    pub fn workflow<W: Workflow>(mut self) -> Self {
        self.behaviours
            .workflows
            .push((W::NAME, |b| b.workflow::<W>()));
        self
    }

    /// Registers an effect, made from the runner's command client (a tuple struct's name
    /// does: `.effect(WithdrawEffect)`): `runner` nodes execute it.
    pub fn effect<E: Effect>(
        mut self,
        make: impl Fn(CommandClient) -> E + Send + Sync + 'static,
    ) -> Self {
        self.behaviours.effects.push((
            E::TYPE,
            Arc::new(move |b: RunnerNodeBuilder, client| b.effect(make(client))),
        ));
        self
    }

    /// What `dev` prints under "Try:" (by default, one command line per aggregate type).
    pub fn dev_hints(mut self, hints: DevHints) -> Self {
        self.dev_hints = Some(hints);
        self
    }

    /// The registered behaviours.
    pub fn behaviours(&self) -> &Behaviours {
        &self.behaviours
    }

    /// The binary's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Checks the registrations ([`Behaviours::validate`]).
    pub fn validate(&self) -> Result<(), RegistrationError> {
        self.behaviours.validate()
    }

    /// Runs the command line of this process and returns its exit code: parses flags, checks
    /// the registrations, sets up logging and the async runtime, runs the subcommand.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// [`App::main`] over the given arguments (the first is the program name).
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = match crate::cli::parse(self.name, args) {
            Ok(cli) => cli,
            Err(e) => {
                // --help and --version print to stdout and succeed; usage errors exit 2.
                let _ = e.print();
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            }
        };
        if let Err(e) = self.validate() {
            eprintln!("error: {}: {e}", self.name);
            return ExitCode::from(2);
        }
        init_tracing();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = Arc::new(self);
        match runtime.block_on(crate::cli::run(cli, app)) {
            Ok(code) => code,
            Err(e) => {
                // One line per cause, outermost first.
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// What `dev` prints under "Try:".
    pub(crate) fn hints(&self, http: &str, token: &str) -> String {
        if let Some(hints) = self.dev_hints {
            return hints(http, token);
        }
        let mut out = String::new();
        for ty in self.behaviours.aggregate_types() {
            out.push_str(&format!(
                "  curl -s -X POST {http}/v1/commands/{ty}/<id> -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"type\":\"<Command>\",\"payload\":{{}}}}'\n"
            ));
        }
        for view in self.behaviours.view_names() {
            out.push_str(&format!(
                "  curl -s {http}/v1/query/{view}/<key> -H 'Authorization: Bearer {token}'\n"
            ));
        }
        out
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    // A second application in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudlysis_examples::account::Account;
    use cloudlysis_examples::balances::Balances;
    use cloudlysis_examples::transfer::{DepositEffect, Transfer, WithdrawEffect};

    fn demo() -> App {
        App::new("t")
            .aggregate::<Account>()
            .view::<Balances>()
            .workflow::<Transfer>()
            .effect(WithdrawEffect)
            .effect(DepositEffect)
    }

    #[test]
    fn the_demo_registrations_are_valid() {
        let app = demo();
        assert_eq!(app.validate(), Ok(()));
        assert_eq!(app.behaviours().aggregate_types(), ["account"]);
        assert_eq!(app.behaviours().view_names(), ["balances"]);
        assert_eq!(app.behaviours().workflow_names(), ["transfer"]);
        assert_eq!(app.behaviours().effect_types(), ["withdraw", "deposit"]);
    }

    #[test]
    fn an_aggregate_registered_twice_is_named() {
        let err = demo().aggregate::<Account>().validate().unwrap_err();
        assert_eq!(
            err,
            RegistrationError::Duplicate {
                kind: "aggregate",
                name: "account"
            }
        );
        assert_eq!(err.to_string(), "aggregate `account` is registered twice");
    }

    #[test]
    fn a_view_over_an_unregistered_aggregate_is_named() {
        let err = App::new("t").view::<Balances>().validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "view `balances` follows aggregate type `account`, which is not registered (registered: )"
        );
    }

    #[test]
    fn an_invalid_name_is_named() {
        struct Bad;
        impl View for Bad {
            const NAME: &'static str = "bad name";
            const SCHEMA_VERSION: u32 = 1;
            type Document = ();
            fn aggregate_types() -> &'static [&'static str] {
                &["account"]
            }
            fn key(_: &cloudlysis_runtime::envelope::EventEnvelope) -> Option<String> {
                None
            }
            fn apply(
                _: &mut (),
                _: &cloudlysis_runtime::envelope::EventEnvelope,
            ) -> Result<(), String> {
                Ok(())
            }
        }
        let err = demo().view::<Bad>().validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("view `bad name`: invalid name:"),
            "{err}"
        );
        struct Reserved;
        impl View for Reserved {
            const NAME: &'static str = "_mine";
            const SCHEMA_VERSION: u32 = 1;
            type Document = ();
            fn aggregate_types() -> &'static [&'static str] {
                &["account"]
            }
            fn key(_: &cloudlysis_runtime::envelope::EventEnvelope) -> Option<String> {
                None
            }
            fn apply(
                _: &mut (),
                _: &cloudlysis_runtime::envelope::EventEnvelope,
            ) -> Result<(), String> {
                Ok(())
            }
        }
        let err = demo().view::<Reserved>().validate().unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
