//! The scheduler's executor for definitions: a claimed run goes to its kind's [`Kind::run`].

use super::{Context, Kind};
use crate::schedule::{Claimed, Executor, Outcome, RunError};

/// Dispatches claimed runs to their kind.
#[derive(Clone)]
pub struct Jobs {
    ctx: Context,
}

impl Jobs {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    async fn run<K: Kind>(&self, claimed: &Claimed) -> Result<Outcome, RunError> {
        K::run(&self.ctx, claimed).await
    }
}

impl Executor for Jobs {
    async fn execute(&self, claimed: &Claimed) -> Result<Outcome, RunError> {
        match claimed.kind.as_str() {
            crate::alerts::Alerts::KIND => self.run::<crate::alerts::Alerts>(claimed).await,
            crate::reports::Reports::KIND => self.run::<crate::reports::Reports>(claimed).await,
            crate::segments::Segments::KIND => self.run::<crate::segments::Segments>(claimed).await,
            crate::experiments::Experiments::KIND => {
                self.run::<crate::experiments::Experiments>(claimed).await
            }
            other => Err(RunError::new(format!("no job kind {other:?}"))),
        }
    }
}
