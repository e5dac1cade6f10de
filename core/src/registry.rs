//! One registry per plugin kind: a table from `type` name to factory.
//!
//! Each plugin crate fills its registry in one function (`inputs::registry()`,
//! `processors::registry()`, `outputs::registry()`), one line per plugin, so
//! the list of supported plugins is readable in one place.

use std::collections::BTreeMap;

use crate::config::{BuildContext, ConfigError, PluginConfig};

/// Builds a plugin from its raw config.
pub type Factory<T> = fn(&PluginConfig, &BuildContext) -> Result<Box<T>, ConfigError>;

/// Plugins of one kind (inputs, processors or outputs), by `type` name.
pub struct Registry<T: ?Sized> {
    kind: &'static str,
    factories: BTreeMap<&'static str, Factory<T>>,
}

impl<T: ?Sized> Registry<T> {
    /// An empty registry; `kind` names the plugin kind in error messages.
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            factories: BTreeMap::new(),
        }
    }

    /// Registers `factory` under `type_name`.
    ///
    /// # Panics
    /// When the name is taken: that is a programming error caught by the
    /// registry's own tests, never a user error.
    pub fn register(&mut self, type_name: &'static str, factory: Factory<T>) -> &mut Self {
        let previous = self.factories.insert(type_name, factory);
        assert!(
            previous.is_none(),
            "{} type `{type_name}` registered twice",
            self.kind
        );
        self
    }

    /// The registered type names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    /// Whether `type_name` is registered.
    pub fn contains(&self, type_name: &str) -> bool {
        self.factories.contains_key(type_name)
    }

    /// Builds the plugin named by `config.type_name`. An unknown name is
    /// rejected with the file, the key and the list of known types.
    pub fn build(&self, config: &PluginConfig, context: &BuildContext) -> Result<Box<T>, ConfigError> {
        match self.factories.get(config.type_name.as_str()) {
            Some(factory) => factory(config, context),
            None => Err(config.origin.error(format!(
                "unknown {} type `{}`; known types: {}",
                self.kind,
                config.type_name,
                self.names().collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;
    use serde::Deserialize;
    use serde_json::json;

    trait Greeter {
        fn greet(&self) -> String;
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct HelloConfig {
        name: String,
    }

    struct Hello(String);
    impl Greeter for Hello {
        fn greet(&self) -> String {
            format!("hello {}", self.0)
        }
    }

    fn build_hello(config: &PluginConfig, _: &BuildContext) -> Result<Box<dyn Greeter>, ConfigError> {
        let parsed: HelloConfig = config.parse()?;
        Ok(Box::new(Hello(parsed.name)))
    }

    fn registry() -> Registry<dyn Greeter> {
        let mut registry = Registry::new("greeter");
        registry
            .register("hello", build_hello)
            .register("hi", build_hello);
        registry
    }

    fn plugin(type_name: &str, settings: serde_json::Value) -> PluginConfig {
        PluginConfig {
            type_name: type_name.into(),
            settings,
            origin: Origin::named("modules.d/misp.yml")
                .child("processors.0")
                .child(type_name),
        }
    }

    #[test]
    fn builds_known_types() {
        let greeter = registry()
            .build(
                &plugin("hello", json!({"name": "misp"})),
                &BuildContext::default(),
            )
            .unwrap();
        assert_eq!(greeter.greet(), "hello misp");
    }

    #[test]
    fn unknown_type_names_file_key_and_known_types() {
        let error = registry()
            .build(&plugin("helo", json!({})), &BuildContext::default())
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "modules.d/misp.yml: key `processors.0.helo`: unknown greeter type `helo`; known types: hello, hi"
        );
    }

    #[test]
    fn plugin_config_errors_carry_the_key() {
        let error = registry()
            .build(&plugin("hello", json!({"nme": "x"})), &BuildContext::default())
            .err()
            .unwrap();
        assert_eq!(error.key, "processors.0.hello.nme");
        assert!(error.reason.contains("unknown field `nme`"));
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_registration_panics() {
        let mut registry = registry();
        registry.register("hello", build_hello);
    }
}
