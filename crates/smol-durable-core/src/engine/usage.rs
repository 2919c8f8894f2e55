//! Token usage of runs, summed over the budget ledger (so it spans every attempt).

use super::options::TokenUsage;
use crate::store::LedgerEntry;
use crate::Error;

/// Token usage of a root run, summed over its ledger (so it spans every attempt).
pub(crate) async fn ledger_usage(
    store: &dyn crate::DurableStore,
    root_run_id: &str,
) -> Result<TokenUsage, Error> {
    let entries = store.ledger_entries(root_run_id).await?;
    Ok(sum_usage(entries.iter()))
}

/// Token usage of one run of a root run's tree (a child's own calls).
pub(crate) async fn run_usage(
    store: &dyn crate::DurableStore,
    root_run_id: &str,
    run_id: &str,
) -> Result<TokenUsage, Error> {
    let entries = store.ledger_entries(root_run_id).await?;
    Ok(sum_usage(
        entries.iter().filter(|entry| entry.run_id == run_id),
    ))
}

impl TokenUsage {
    /// What ledger rows (of [`DurableStore::ledger_entries`](crate::DurableStore::ledger_entries))
    /// spent, as [`Engine::token_usage`](crate::Engine::token_usage) sums them: for a caller
    /// that has read the rows anyway.
    pub fn from_ledger<'a>(entries: impl IntoIterator<Item = &'a LedgerEntry>) -> Self {
        sum_usage(entries.into_iter())
    }
}

/// What the rows spent: a fork's copies are the source's spending, not the fork's.
pub(crate) fn sum_usage<'a>(entries: impl Iterator<Item = &'a LedgerEntry>) -> TokenUsage {
    let mut usage = TokenUsage::default();
    for entry in entries.filter(|entry| entry.source_type.is_spent()) {
        let reported = entry.tokens();
        let input = reported.input_tokens.unwrap_or(0);
        // smol-wf's run total: the reported one, else input, output and cache writes (cache
        // reads are not added here, unlike `history`'s per-step total: smol-wf did the same).
        let total = reported.total_tokens.unwrap_or_else(|| {
            input
                .saturating_add(entry.output_tokens)
                .saturating_add(reported.cache_write_tokens.unwrap_or(0))
        });
        usage.input_tokens = usage.input_tokens.saturating_add(input);
        usage.output_tokens = usage.output_tokens.saturating_add(entry.output_tokens);
        usage.total_tokens = usage.total_tokens.saturating_add(total);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Usage;

    fn billed(usage: Usage) -> LedgerEntry {
        LedgerEntry::new(
            "run",
            "run",
            "step",
            crate::store::LedgerSource::AgentStep,
            "s".into(),
            Some(&usage),
            0,
        )
    }

    #[test]
    fn a_run_s_total_is_the_reported_one_else_input_output_and_cache_writes() {
        let reported = Usage {
            total_tokens: Some(100),
            ..Usage::tokens(3, 4)
        };
        let cached = Usage {
            total_tokens: None,
            cache_read_tokens: Some(50),
            cache_write_tokens: Some(7),
            ..Usage::tokens(3, 4)
        };
        let huge = Usage::tokens(u64::MAX, u64::MAX);
        let entries = [billed(reported), billed(cached)];
        let usage = sum_usage(entries.iter());
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (6, 8, 100 + 3 + 4 + 7)
        );
        assert_eq!(TokenUsage::from_ledger(&entries), usage);
        let entries = [billed(huge.clone()), billed(huge)];
        assert_eq!(sum_usage(entries.iter()).total_tokens, u64::MAX);
    }
}
