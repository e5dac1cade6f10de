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
    /// `delete` of a document that is not there (404): already gone, done.
    AlreadyDeleted,
    /// `update` of a document that is not there (404
    /// `document_missing_exception`, or no such index): failed for good,
    /// logged and counted; not dead-lettered (a partial document alone means
    /// nothing). An update with `doc_as_upsert` never gets this answer.
    UpdateMissing,
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
        // `result: not_found` (or no such index): the document is gone either way.
        404 if op == OpType::Delete => ItemOutcome::AlreadyDeleted,
        404 if op == OpType::Update => ItemOutcome::UpdateMissing,
        // Another writer changed the document between the update's read
        // and write: the update applies cleanly on a second try.
        409 if op == OpType::Update => ItemOutcome::Retry,
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
            (200, OpType::Index, Acked),
            (200, OpType::Update, Acked),
            (201, OpType::Update, Acked),
            (200, OpType::Delete, Acked),
            (404, OpType::Delete, AlreadyDeleted),
            (404, OpType::Update, UpdateMissing),
            (404, OpType::Index, NonIndexable),
            (409, OpType::Update, Retry),
            (409, OpType::Delete, NonIndexable),
            (400, OpType::Update, NonIndexable),
            (429, OpType::Delete, Retry),
            (503, OpType::Update, Retry),
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
