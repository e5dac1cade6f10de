//! The small crate every threatbeat crate shares: the [`Event`], dotted
//! [`FieldPath`]s, the plugin traits ([`Input`], [`Processor`], [`Output`])
//! with the [`Registry`] that builds them from config, config errors that name
//! file and key, cursor persistence and the [`Secret`] type.

pub mod config;
pub mod cursor;
pub mod event;
pub mod path;
pub mod plugin;
pub mod registry;
pub mod secret;

pub use config::{deserialize_at, BuildContext, ConfigError, Origin, PluginConfig};
pub use cursor::{CursorError, CursorStore};
pub use event::{Event, OpType, METADATA_NAMESPACE};
pub use path::{FieldPath, PathError, SetError};
pub use plugin::{
    Batch, Input, InputContext, InputError, Output, OutputError, ProcessOutcome, Processor, ProcessorError,
    PublishError, PublishRequest, Publisher,
};
pub use registry::{Factory, Registry};
pub use secret::{Secret, REDACTED};
