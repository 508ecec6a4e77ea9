//! Which published rows may leave the outbox (pure).

use std::collections::HashSet;

/// Given a claimed batch in publish order as `(id, key, acknowledged)`, returns the ids to
/// delete: for each key, the rows before its first unacknowledged one. A later row of a key
/// whose earlier row failed stays too, so a retry republishes them in order.
pub(super) fn deletable_ids<'a>(batch: impl IntoIterator<Item = (i64, &'a str, bool)>) -> Vec<i64> {
    let mut blocked: HashSet<&str> = HashSet::new();
    let mut ids = Vec::new();
    for (id, key, acknowledged) in batch {
        if !acknowledged {
            blocked.insert(key);
        }
        if acknowledged && !blocked.contains(key) {
            ids.push(id);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::deletable_ids;

    #[test]
    fn all_acknowledged_rows_leave() {
        let ids = deletable_ids([(1, "a", true), (2, "b", true), (3, "a", true)]);
        assert_eq!(ids, vec![1, 2, 3]);
    }

    #[test]
    fn a_failure_keeps_the_rest_of_its_key_but_not_other_keys() {
        let ids = deletable_ids([
            (1, "a", true),
            (2, "a", false),
            (3, "b", true),
            (4, "a", true),
            (5, "b", true),
        ]);
        assert_eq!(ids, vec![1, 3, 5]);
    }

    #[test]
    fn nothing_leaves_when_nothing_was_acknowledged() {
        assert!(deletable_ids([(1, "a", false), (2, "b", false)]).is_empty());
    }
}
