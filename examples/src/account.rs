//! The `account` aggregate. Amounts are integers in minor units (cents), at most
//! [`MAX_AMOUNT`] (2^53 − 1), and so is a balance: every amount and balance is exact as an `i64`
//! (the `balances` view) and as a JSON number in any client.
//!
//! | command | payload | rejected when |
//! |---|---|---|
//! | `Open` | `{"owner": string}` | already open or closed; owner empty |
//! | `Deposit` | `{"amount": integer in 1..=MAX_AMOUNT}` | not open; amount 0 or above the limit; balance would pass the limit |
//! | `Withdraw` | `{"amount": integer in 1..=MAX_AMOUNT}` | not open; amount 0 or above the limit; insufficient funds |
//! | `Close` | — | not open; balance not zero |

use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection, Snapshots};
use serde::{Deserialize, Serialize};

/// The account aggregate.
pub struct Account;

/// Largest amount and largest balance, minor units: 2^53 − 1, the largest integer every JSON
/// client reads exactly.
pub const MAX_AMOUNT: u64 = (1 << 53) - 1;

/// Account state (snapshotted every [`SNAPSHOT_EVERY`] events).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Owner's name.
    pub owner: String,
    /// Balance in minor units.
    pub balance: u64,
    /// Open for business.
    pub open: bool,
    /// Closed for good.
    pub closed: bool,
}

/// An account's state is snapshotted every this many events: a busy account rehydrates from
/// its latest snapshot plus at most this many events.
pub const SNAPSHOT_EVERY: u64 = 1000;

/// Account commands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", content = "payload", deny_unknown_fields)]
pub enum AccountCommand {
    /// Opens the account.
    Open {
        /// Owner's name.
        owner: String,
    },
    /// Adds money.
    Deposit {
        /// Minor units, > 0.
        amount: u64,
    },
    /// Takes money out.
    Withdraw {
        /// Minor units, > 0.
        amount: u64,
    },
    /// Closes the account (balance must be zero).
    Close,
}

/// Account events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum AccountEvent {
    /// The account was opened.
    Opened {
        /// Owner's name.
        owner: String,
    },
    /// Money came in.
    Deposited {
        /// Minor units.
        amount: u64,
    },
    /// Money went out.
    Withdrew {
        /// Minor units.
        amount: u64,
    },
    /// The account was closed.
    Closed,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    const SCHEMA_VERSION: u32 = 1;
    type State = AccountState;
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn handle(
        s: &AccountState,
        command: AccountCommand,
        _ctx: &CommandContext,
    ) -> Result<Vec<AccountEvent>, Rejection> {
        use AccountCommand::*;
        let must_be_open = || {
            if s.open {
                Ok(())
            } else {
                Err(Rejection::new("account is not open"))
            }
        };
        let positive = |amount: u64| {
            if amount == 0 {
                Err(Rejection::new("amount must be greater than 0"))
            } else if amount > MAX_AMOUNT {
                Err(Rejection::new(format!(
                    "amount must be at most {MAX_AMOUNT}"
                )))
            } else {
                Ok(())
            }
        };
        match command {
            Open { owner } => {
                if s.open || s.closed {
                    return Err(Rejection::new("account already exists"));
                }
                if owner.trim().is_empty() {
                    return Err(Rejection::new("owner must not be empty"));
                }
                Ok(vec![AccountEvent::Opened { owner }])
            }
            Deposit { amount } => {
                must_be_open()?;
                positive(amount)?;
                if s.balance + amount > MAX_AMOUNT {
                    return Err(Rejection::new(format!(
                        "the balance must stay at most {MAX_AMOUNT}: it is {}",
                        s.balance
                    )));
                }
                Ok(vec![AccountEvent::Deposited { amount }])
            }
            Withdraw { amount } => {
                must_be_open()?;
                positive(amount)?;
                if amount > s.balance {
                    return Err(Rejection::new(format!(
                        "insufficient funds: balance {}, requested {amount}",
                        s.balance
                    )));
                }
                Ok(vec![AccountEvent::Withdrew { amount }])
            }
            Close => {
                must_be_open()?;
                if s.balance != 0 {
                    return Err(Rejection::new("balance must be zero to close"));
                }
                Ok(vec![AccountEvent::Closed])
            }
        }
    }

    fn snapshots() -> Option<Snapshots<AccountState>> {
        Some(Snapshots::json(SNAPSHOT_EVERY, 1))
    }

    fn apply(s: &mut AccountState, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                s.owner = owner.clone();
                s.open = true;
            }
            AccountEvent::Deposited { amount } => s.balance += amount,
            AccountEvent::Withdrew { amount } => s.balance -= amount,
            AccountEvent::Closed => {
                s.open = false;
                s.closed = true;
            }
        }
    }
}
