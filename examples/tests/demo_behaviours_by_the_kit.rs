//! Every demo behaviour (the `account` aggregate, the `balances` view, the `transfer` saga),
//! tested with the kit: pure, no NATS.

use cloudlysis_actors::testkit;
use cloudlysis_examples::account::{Account, AccountCommand, AccountEvent, MAX_AMOUNT};
use cloudlysis_examples::balances::{Balance, Balances};
use cloudlysis_examples::transfer::{Stage, Transfer};
use serde_json::json;

fn opened() -> AccountEvent {
    AccountEvent::Opened {
        owner: "alice".into(),
    }
}

#[test]
fn an_account_opens_once_and_for_a_named_owner() {
    testkit::aggregate::<Account>()
        .given([])
        .when_json("Open", json!({"owner": "alice"}))
        .then_events([opened()]);
    testkit::aggregate::<Account>()
        .given([opened()])
        .when_json("Open", json!({"owner": "bob"}))
        .then_rejected("already exists");
    testkit::aggregate::<Account>()
        .given([])
        .when(AccountCommand::Open { owner: " ".into() })
        .then_rejected("owner must not be empty");
}

#[test]
fn deposits_and_withdrawals_keep_the_balance_in_range() {
    let state = testkit::aggregate::<Account>()
        .given([opened(), AccountEvent::Deposited { amount: 100 }])
        .when(AccountCommand::Withdraw { amount: 40 })
        .then_events([AccountEvent::Withdrew { amount: 40 }]);
    assert_eq!(state.balance, 60);
    testkit::aggregate::<Account>()
        .given([opened(), AccountEvent::Deposited { amount: 100 }])
        .when(AccountCommand::Withdraw { amount: 101 })
        .then_rejected("insufficient funds: balance 100, requested 101");
    testkit::aggregate::<Account>()
        .given([opened(), AccountEvent::Deposited { amount: MAX_AMOUNT }])
        .when(AccountCommand::Deposit { amount: 1 })
        .then_rejected("the balance must stay at most");
    testkit::aggregate::<Account>()
        .given([])
        .when(AccountCommand::Deposit { amount: 1 })
        .then_rejected("account is not open");
}

#[test]
fn only_an_empty_account_closes() {
    testkit::aggregate::<Account>()
        .given([opened(), AccountEvent::Deposited { amount: 1 }])
        .when(AccountCommand::Close)
        .then_rejected("balance must be zero");
    testkit::aggregate::<Account>()
        .given([opened()])
        .when_json("Close", serde_json::Value::Null)
        .then_events([AccountEvent::Closed]);
}

#[test]
fn the_balance_view_folds_an_accounts_history() {
    let history = testkit::history::<Account>(
        "acc-1",
        [
            opened(),
            AccountEvent::Deposited { amount: 100 },
            AccountEvent::Withdrew { amount: 30 },
        ],
    );
    testkit::view::<Balances>().given(history).then_document(
        "acc-1",
        Balance {
            owner: "alice".into(),
            balance: 70,
            open: true,
        },
    );
}

#[test]
fn the_balance_view_refuses_an_amount_beyond_the_limit() {
    let mut event =
        testkit::envelope::<Account>("acc-1", 2, &AccountEvent::Deposited { amount: 1 });
    event.payload = json!({ "amount": MAX_AMOUNT + 1 });
    testkit::view::<Balances>()
        .given([event])
        .then_refused("Deposited of 9007199254740992: above the limit");
}

#[test]
fn a_transfer_withdraws_then_deposits_then_completes() {
    let mut kit = testkit::workflow::<Transfer>();
    kit.start_json(json!({"from": "acc-1", "to": "acc-2", "amount": 250}))
        .then_issues(&["withdraw"])
        .then_arms("timeout");
    kit.result_ok(
        "withdraw",
        json!({"version": 2, "stream_sequence": 5, "replayed": false}),
    )
    .then_issues(&["deposit"]);
    kit.result_ok(
        "deposit",
        json!({"version": 2, "stream_sequence": 6, "replayed": false}),
    )
    .then_completes();
    assert_eq!(kit.state().stage, Stage::Completed);
}

#[test]
fn a_failed_deposit_is_refunded_and_the_transfer_fails() {
    let mut kit = testkit::workflow::<Transfer>();
    kit.start_json(json!({"from": "acc-1", "to": "acc-2", "amount": 250}))
        .then_issues(&["withdraw"]);
    kit.result_ok(
        "withdraw",
        json!({"version": 2, "stream_sequence": 5, "replayed": false}),
    )
    .then_issues(&["deposit"]);
    kit.result_failed("deposit", "account is not open")
        .then_issues(&["deposit"]);
    assert_eq!(kit.state().stage, Stage::Refunding);
    kit.result_ok(
        "refund",
        json!({"version": 3, "stream_sequence": 7, "replayed": false}),
    )
    .then_fails("the deposit failed: account is not open");
}

#[test]
fn a_transfer_to_the_same_account_is_refused_at_start() {
    testkit::workflow::<Transfer>()
        .start_json(json!({"from": "acc-1", "to": "acc-1", "amount": 1}))
        .then_refused("must be different accounts");
}
