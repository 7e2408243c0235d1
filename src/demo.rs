//! The demo domain (bank accounts) as the benchmarks and the `cloudlysis` binary use it.
//!
//! `bench` always measures the runtime with the demo behaviours, whatever an application
//! registers, so its figures compare across applications and releases.

use std::fmt::Write as _;

use cloudlysis_examples::{account::Account, balances::Balances, transfer};

use crate::App;

/// The demo application: the `account` aggregate, the `balances` view, the `transfer` saga
/// and its `withdraw` / `deposit` effects.
pub fn app() -> App {
    App::new("cloudlysis")
        .aggregate::<Account>()
        .view::<Balances>()
        .workflow::<transfer::Transfer>()
        .effect(transfer::WithdrawEffect)
        .effect(transfer::DepositEffect)
        .dev_hints(dev_hints)
}

/// The demo walkthrough `cloudlysis dev` prints: open an account, read its balance, run a
/// transfer saga.
pub fn dev_hints(http: &str, token: &str) -> String {
    let mut out = String::new();
    let auth = format!("-H 'Authorization: Bearer {token}' -H 'Content-Type: application/json'");
    let lines = [
        format!(
            "  curl -s -X POST {http}/v1/commands/account/acc-1 -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"type\":\"Open\",\"payload\":{{\"owner\":\"alice\"}}}}'"
        ),
        "Then read the view (x-min-sequence: the stream_sequence the command returned):".into(),
        format!(
            "  curl -s {http}/v1/query/balances/acc-1 -H 'Authorization: Bearer {token}' -H 'x-min-sequence: 1'"
        ),
        "A transfer saga: open a second account, fund the first, move 250 from acc-1 to acc-2:"
            .into(),
        format!(
            "  curl -s -X POST {http}/v1/commands/account/acc-2 {auth} -d '{{\"type\":\"Open\",\"payload\":{{\"owner\":\"bob\"}}}}'"
        ),
        format!(
            "  curl -s -X POST {http}/v1/commands/account/acc-1 {auth} -d '{{\"type\":\"Deposit\",\"payload\":{{\"amount\":1000}}}}'"
        ),
        format!(
            "  curl -s -X POST {http}/v1/workflows/transfer/t-1 {auth} -d '{{\"from\":\"acc-1\",\"to\":\"acc-2\",\"amount\":250}}'"
        ),
        "Then read the transfer (status running, then completed):".into(),
        format!("  curl -s {http}/v1/workflows/transfer/t-1 -H 'Authorization: Bearer {token}'"),
    ];
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out
}
