//! The small crate every threatbeat crate shares: the [`Event`], dotted
//! [`FieldPath`]s, the plugin traits ([`Input`], [`Processor`], [`Output`])
//! with the [`Registry`] that builds them from config, config errors that name
//! file and key, cursor persistence, durations as users write them (`60m`, `2d`), Beats' `ssl.*` TLS
//! settings and the [`Secret`] type.

pub mod backoff;
pub mod config;
pub mod cursor;
pub mod duration;
pub mod encoded_metadata;
pub mod event;
pub mod field_ops;
pub mod path;
pub mod plugin;
pub mod registry;
pub mod secret;
pub mod tls;

pub use backoff::Backoff;
pub use config::{
    deep_merge, deserialize_at, deserialize_switch, nest_dotted_keys, switch_at, BuildContext, ConfigError,
    NullKeys, Origin, PluginConfig,
};
pub use cursor::{state_name, CursorError, CursorStore};
pub use encoded_metadata::EncodedMetadata;
pub use event::{
    with_serialised, DecodeError, EncodedEvent, Event, OpType, SharedRecord, METADATA_NAMESPACE,
};
pub use field_ops::{FieldGroups, FieldMove};
pub use path::{FieldPath, PathError, SetError};
pub use plugin::{
    Batch, Input, InputContext, InputError, Output, OutputError, ProcessOutcome, Processor, ProcessorError,
    PublishError, PublishRequest, Publisher,
};
pub use registry::{Factory, Registry};
pub use secret::{redact_userinfo, Secret, REDACTED};
