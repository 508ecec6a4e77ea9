//! Which claimed rows may leave the outbox, and how (pure).

use std::collections::HashSet;

/// What the broker said about one published row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Acknowledged: the row may be deleted.
    Acknowledged,
    /// Not delivered this time (broker away, timeout): publish it again later.
    Failed,
    /// Refused for good (too large, malformed): set it aside with this error.
    Refused(String),
}

/// What to do with a claimed batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Settled {
    /// Rows acknowledged: delete them.
    pub published: Vec<i64>,
    /// Rows refused for good, with the error: move them to `outbox_set_aside`.
    pub set_aside: Vec<(i64, String)>,
}

/// Given a claimed batch in publish order as `(id, key, delivery)`, settles each key's rows
/// up to its first failed one: acknowledged rows leave, refused rows are set aside. A
/// failed row and every later row of its key stay, so a retry republishes them in order;
/// other keys are never held up.
pub(super) fn settle<'a>(batch: impl IntoIterator<Item = (i64, &'a str, Delivery)>) -> Settled {
    let mut blocked: HashSet<&str> = HashSet::new();
    let mut settled = Settled::default();
    for (id, key, delivery) in batch {
        if blocked.contains(key) {
            continue;
        }
        match delivery {
            Delivery::Acknowledged => settled.published.push(id),
            Delivery::Refused(error) => settled.set_aside.push((id, error)),
            Delivery::Failed => {
                blocked.insert(key);
            }
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::Delivery::{Acknowledged as Ack, Failed, Refused};
    use super::*;

    #[test]
    fn all_acknowledged_rows_leave() {
        let settled = settle([(1, "a", Ack), (2, "b", Ack), (3, "a", Ack)]);
        assert_eq!(settled.published, vec![1, 2, 3]);
        assert!(settled.set_aside.is_empty());
    }

    #[test]
    fn a_failure_keeps_the_rest_of_its_key_but_not_other_keys() {
        let settled = settle([
            (1, "a", Ack),
            (2, "a", Failed),
            (3, "b", Ack),
            (4, "a", Ack),
            (5, "b", Ack),
        ]);
        assert_eq!(settled.published, vec![1, 3, 5]);
    }

    #[test]
    fn a_refused_row_is_set_aside_and_holds_nothing_up() {
        let settled = settle([
            (1, "a", Refused("too large".into())),
            (2, "a", Ack),
            (3, "b", Failed),
            (4, "b", Refused("too large".into())),
        ]);
        assert_eq!(settled.published, vec![2]);
        // Row 4 waits behind row 3's retry: it is set aside only in its turn.
        assert_eq!(settled.set_aside, vec![(1, "too large".to_string())]);
    }

    #[test]
    fn nothing_leaves_when_nothing_was_acknowledged() {
        assert_eq!(
            settle([(1, "a", Failed), (2, "b", Failed)]),
            Settled::default()
        );
    }
}
