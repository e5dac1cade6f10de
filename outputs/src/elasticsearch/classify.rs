//! What to do with a bulk response and with each of its items. Pure
//! functions, so the whole table is tested without a server.

use threatbeat_core::OpType;

/// The fate of one bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Indexed (2xx).
    Acked,
    /// `create` of an `_id` that is already indexed (409): done, counted.
    Duplicate,
    /// Back-pressure or a transient failure (429, 5xx, 403): send it again.
    Retry,
    /// The document itself is refused (other 4xx): dead-letter or drop.
    NonIndexable,
}

/// Classifies one item by its status and the action that was sent.
pub fn classify_item(status: u16, op: OpType) -> ItemOutcome {
    match status {
        200..=299 => ItemOutcome::Acked,
        409 if op == OpType::Create => ItemOutcome::Duplicate,
        429 => ItemOutcome::Retry,
        // A privilege or write block is a configuration problem: keep the
        // event and retry rather than dropping data the user wants.
        403 => ItemOutcome::Retry,
        400..=499 => ItemOutcome::NonIndexable,
        _ => ItemOutcome::Retry,
    }
}

/// The fate of a whole bulk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// 200: read the items.
    ReadItems,
    /// 413: the body is too large; split the batch.
    Split,
    /// 401/403: credentials rejected or lacking privileges; retry slowly.
    CredentialsRejected,
    /// Anything else (429, 5xx, unexpected): retry every item with backoff.
    RetryAll,
}

/// Classifies a bulk response by its HTTP status.
pub fn classify_response(status: u16) -> ResponseOutcome {
    match status {
        200 => ResponseOutcome::ReadItems,
        413 => ResponseOutcome::Split,
        401 | 403 => ResponseOutcome::CredentialsRejected,
        _ => ResponseOutcome::RetryAll,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_table() {
        use ItemOutcome::*;
        let table = [
            (200, OpType::Create, Acked),
            (201, OpType::Create, Acked),
            (201, OpType::Index, Acked),
            (409, OpType::Create, Duplicate),
            (409, OpType::Index, NonIndexable),
            (429, OpType::Create, Retry),
            (500, OpType::Create, Retry),
            (503, OpType::Index, Retry),
            (400, OpType::Create, NonIndexable),
            (404, OpType::Create, NonIndexable),
            (403, OpType::Create, Retry),
            (0, OpType::Create, Retry),
        ];
        for (status, op, expected) in table {
            assert_eq!(classify_item(status, op), expected, "status {status} {op:?}");
        }
    }

    #[test]
    fn response_table() {
        use ResponseOutcome::*;
        for (status, expected) in [
            (200, ReadItems),
            (413, Split),
            (401, CredentialsRejected),
            (403, CredentialsRejected),
            (429, RetryAll),
            (500, RetryAll),
            (502, RetryAll),
            (503, RetryAll),
            (400, RetryAll),
            (406, RetryAll),
        ] {
            assert_eq!(classify_response(status), expected, "status {status}");
        }
    }
}
