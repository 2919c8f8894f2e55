//! The budget rule (SPEC §7).

use crate::Error;

/// Rejects a new agent call when a total is set and nothing remains (SPEC §7).
pub fn check_budget(total: Option<u64>, spent: u64) -> Result<(), Error> {
    match total {
        Some(total) if spent >= total => Err(Error::BudgetExhausted { spent, total }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_rejects_only_when_a_total_is_spent() {
        assert!(check_budget(None, 1_000_000).is_ok());
        assert!(check_budget(Some(10), 9).is_ok());
        assert_eq!(
            check_budget(Some(10), 10).err().map(|e| e.to_string()),
            Some("budget exhausted: spent 10 of 10 output tokens".to_owned())
        );
    }
}
