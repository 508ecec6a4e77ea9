//! Kafka header names that are part of the contract.

/// W3C trace context (`traceparent`) of the message.
pub const TRACEPARENT: &str = "traceparent";

/// On a trigger: the definition to start (otherwise the trigger topic decides).
pub const DEFINITION: &str = "saga.definition";

/// On a command: the saga's deadline (RFC 3339, UTC). Past it, participants refuse forward
/// phases (try, action) with the reason `deadline passed` without running them; confirm,
/// cancel and compensate are always run.
pub const SAGA_DEADLINE: &str = "saga.deadline";

/// On a dead letter: why it could not be processed.
pub const DLQ_ERROR: &str = "dlq.error";
/// On a dead letter: the topic it was consumed from.
pub const DLQ_SOURCE_TOPIC: &str = "dlq.source.topic";
/// On a dead letter: the partition it was consumed from.
pub const DLQ_SOURCE_PARTITION: &str = "dlq.source.partition";
/// On a dead letter: the offset it was consumed from.
pub const DLQ_SOURCE_OFFSET: &str = "dlq.source.offset";
/// On a dead letter: the size in bytes of the original payload (the dead letter carries at
/// most a prefix of it).
pub const DLQ_SOURCE_SIZE: &str = "dlq.source.size";
/// On a dead letter: `true` when its payload is only a prefix of the original.
pub const DLQ_TRUNCATED: &str = "dlq.truncated";
