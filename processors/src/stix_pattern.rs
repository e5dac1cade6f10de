//! `stix_pattern`: a STIX 2.1 indicator pattern (STIX 2.1 §9, the STIX
//! patterning language) into ECS `threat.indicator.*` fields.
//!
//! The pattern is tokenised and parsed into a tree by a recursive-descent
//! parser following OASIS' ANTLR grammar (`STIXPattern.g4`): observation
//! expressions in `[...]` joined by `AND`, `OR` and `FOLLOWEDBY`, parentheses,
//! the qualifiers `WITHIN n SECONDS`, `REPEATS n TIMES`, `START t'…' STOP
//! t'…'`; comparison expressions `object-type:path op value` joined by `AND`
//! and `OR`, `NOT`, `EXISTS`, sets `IN (…)`; string literals with the `\'` and
//! `\\` escapes, integers, floats, booleans, `h'…'`, `b'…'` and `t'…'`
//! literals, `/* */` and `//` comments. Input of any shape gives a tree or a
//! [`PatternError`] naming the offset; nesting is bounded so that no input
//! can exhaust the stack.
//!
//! Every comparison that says "this observable has exactly this value"
//! (`=`, or `IN` a set, not negated) on a path of [`MAPPING`] gives its value
//! to the ECS field there. Values of comparisons joined by `OR` and `AND`
//! alike are all kept (a list when there are several), as Elastic's
//! `ti_custom` does: each identifies the indicator's observable. Qualifiers
//! do not change the values. What cannot be matched value by value (`!=`,
//! `>`, `LIKE`, `MATCHES`, `ISSUBSET`, `EXISTS`, `NOT`, a path outside the
//! table, a pattern holding `FOLLOWEDBY`, a `pattern_type` other than
//! `stix`) is reported in the `unmapped_field` and by a tag.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use threatbeat_core::{BuildContext, ConfigError, Event, FieldPath, Origin, ProcessOutcome, ProcessorError};

use crate::common::{path_at, write, Step, StepConfig};

/// The deepest nesting of parentheses and brackets accepted: far beyond any
/// real pattern, well within the stack of every thread.
const MAX_DEPTH: usize = 64;

/// What the value of a mapped comparison must be, and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string, written as it is.
    Text,
    /// An IPv4/IPv6 address or CIDR (`ipv4-addr:value` may be a CIDR).
    Ip,
    /// A URL: `url.original`, `url.full` and the parsed parts.
    Url,
    /// A hex digest: lower-cased.
    HexHash,
    /// ssdeep and TLSH digests: written as they are.
    OtherHash,
    /// A non-negative integer (an integer literal, or a string of digits).
    Integer,
    /// A Windows registry key: `registry.path`, `registry.hive`, `registry.key`.
    RegistryKey,
    /// A MAC address: ECS's RFC 7042 form (`00-00-5E-00-53-23`).
    Mac,
    /// An x509 serial number: ECS's form, without colons, upper case.
    Serial,
    /// A timestamp (`t'…'` or a string): written as given.
    Timestamp,
}

/// The STIX object paths mapped to ECS, relative to the target prefix
/// (`threat.indicator` by default). Hash names are matched whatever their
/// case and quoting, with or without the hyphen (`SHA256`, `'SHA-256'`);
/// list indexes (`values[0]`) are matched as `[*]`. The x509 certificate
/// hashes go to `file.hash.*` as in Elastic's `ti_custom` (ECS's `x509` has
/// no hash fields).
pub(crate) const MAPPING: &[(&str, &str, Kind)] = &[
    ("ipv4-addr:value", "ip", Kind::Ip),
    ("ipv6-addr:value", "ip", Kind::Ip),
    ("domain-name:value", "url.domain", Kind::Text),
    ("url:value", "url.original", Kind::Url),
    ("email-addr:value", "email.address", Kind::Text),
    ("file:name", "file.name", Kind::Text),
    ("file:size", "file.size", Kind::Integer),
    ("file:mime_type", "file.mime_type", Kind::Text),
    ("file:parent_directory_ref.path", "file.directory", Kind::Text),
    ("file:hashes.MD5", "file.hash.md5", Kind::HexHash),
    ("file:hashes.SHA-1", "file.hash.sha1", Kind::HexHash),
    ("file:hashes.SHA-256", "file.hash.sha256", Kind::HexHash),
    ("file:hashes.SHA-384", "file.hash.sha384", Kind::HexHash),
    ("file:hashes.SHA-512", "file.hash.sha512", Kind::HexHash),
    ("file:hashes.SSDEEP", "file.hash.ssdeep", Kind::OtherHash),
    ("file:hashes.TLSH", "file.hash.tlsh", Kind::OtherHash),
    ("windows-registry-key:key", "registry.path", Kind::RegistryKey),
    (
        "windows-registry-key:values[*].name",
        "registry.value",
        Kind::Text,
    ),
    (
        "windows-registry-key:values[*].data",
        "registry.data.strings",
        Kind::Text,
    ),
    ("autonomous-system:number", "as.number", Kind::Integer),
    ("autonomous-system:name", "as.organization.name", Kind::Text),
    ("mac-addr:value", "mac", Kind::Mac),
    (
        "x509-certificate:serial_number",
        "x509.serial_number",
        Kind::Serial,
    ),
    (
        "x509-certificate:issuer",
        "x509.issuer.distinguished_name",
        Kind::Text,
    ),
    (
        "x509-certificate:subject",
        "x509.subject.distinguished_name",
        Kind::Text,
    ),
    (
        "x509-certificate:signature_algorithm",
        "x509.signature_algorithm",
        Kind::Text,
    ),
    ("x509-certificate:version", "x509.version_number", Kind::Text),
    (
        "x509-certificate:validity_not_before",
        "x509.not_before",
        Kind::Timestamp,
    ),
    (
        "x509-certificate:validity_not_after",
        "x509.not_after",
        Kind::Timestamp,
    ),
    ("x509-certificate:hashes.MD5", "file.hash.md5", Kind::HexHash),
    ("x509-certificate:hashes.SHA-1", "file.hash.sha1", Kind::HexHash),
    (
        "x509-certificate:hashes.SHA-256",
        "file.hash.sha256",
        Kind::HexHash,
    ),
];

/// ECS's allowed values of `threat.indicator.type` (STIX cyber-observable
/// names): a pattern's object types among them are its indicator types.
pub(crate) const ECS_INDICATOR_TYPES: &[&str] = &[
    "autonomous-system",
    "artifact",
    "directory",
    "domain-name",
    "email-addr",
    "file",
    "ipv4-addr",
    "ipv6-addr",
    "mac-addr",
    "mutex",
    "port",
    "process",
    "software",
    "url",
    "user-account",
    "windows-registry-key",
    "x509-certificate",
];

// ---------------------------------------------------------------------------
// Tokens

/// A pattern that is not STIX patterning: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at offset {offset}: {message}")]
pub struct PatternError {
    /// Byte offset into the pattern.
    pub offset: usize,
    /// What was wrong there.
    pub message: String,
}

fn fail<T>(offset: usize, message: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError {
        offset,
        message: message.into(),
    })
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=` or `==`.
    Equal,
    /// `!=` or `<>`.
    NotEqual,
    /// `<`.
    Less,
    /// `<=`.
    LessOrEqual,
    /// `>`.
    Greater,
    /// `>=`.
    GreaterOrEqual,
    /// `IN (…)`.
    In,
    /// `LIKE '…'`.
    Like,
    /// `MATCHES '…'`.
    Matches,
    /// `ISSUBSET '…'`.
    IsSubset,
    /// `ISSUPERSET '…'`.
    IsSuperset,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Equal => "=",
            Operator::NotEqual => "!=",
            Operator::Less => "<",
            Operator::LessOrEqual => "<=",
            Operator::Greater => ">",
            Operator::GreaterOrEqual => ">=",
            Operator::In => "IN",
            Operator::Like => "LIKE",
            Operator::Matches => "MATCHES",
            Operator::IsSubset => "ISSUBSET",
            Operator::IsSuperset => "ISSUPERSET",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LBracket,
    RBracket,
    LParen,
    RParen,
    Colon,
    Dot,
    Comma,
    Asterisk,
    Compare(Operator),
    Identifier(String),
    Keyword(&'static str),
    Literal(Literal),
}

/// A literal value of the patterning language.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`, escapes undone.
    String(String),
    /// `42`, `-1`, `+3`.
    Integer(i64),
    /// `1.5`, `-.5`.
    Float(f64),
    /// `true`, `false`.
    Bool(bool),
    /// `h'ee01'`: the hex digits.
    Hex(String),
    /// `b'AQID'`: the base64 text.
    Binary(String),
    /// `t'2016-02-14T00:00:00Z'`: the timestamp text.
    Timestamp(String),
}

const KEYWORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "FOLLOWEDBY",
    "LIKE",
    "MATCHES",
    "ISSUPERSET",
    "ISSUBSET",
    "EXISTS",
    "LAST",
    "IN",
    "START",
    "STOP",
    "SECONDS",
    "WITHIN",
    "REPEATS",
    "TIMES",
];

struct Lexer<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Lexer<'a> {
    fn peek_char(&self) -> Option<char> {
        self.text[self.position..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.text[self.position..].chars();
        chars.next();
        chars.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.position += c.len_utf8();
        Some(c)
    }

    fn skip_blanks(&mut self) -> Result<(), PatternError> {
        loop {
            let rest = &self.text[self.position..];
            if let Some(c) = self.peek_char().filter(|c| c.is_whitespace()) {
                self.position += c.len_utf8();
            } else if let Some(body) = rest.strip_prefix("/*") {
                let start = self.position;
                match body.find("*/") {
                    Some(end) => self.position += 2 + end + 2,
                    None => return fail(start, "unterminated comment"),
                }
            } else if rest.starts_with("//") {
                self.position += rest.find(['\r', '\n']).unwrap_or(rest.len());
            } else {
                return Ok(());
            }
        }
    }

    /// The text of a quoted literal starting at the current `'`, escapes undone.
    fn quoted(&mut self) -> Result<String, PatternError> {
        let start = self.position;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return fail(start, "unterminated string literal"),
                Some('\'') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c @ ('\'' | '\\')) => out.push(c),
                    Some(other) => {
                        return fail(
                            self.position - other.len_utf8() - 1,
                            format!("invalid escape `\\{other}` in a string literal (only \\' and \\\\)"),
                        )
                    }
                    None => return fail(start, "unterminated string literal"),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn number(&mut self) -> Result<Literal, PatternError> {
        let start = self.position;
        if matches!(self.peek_char(), Some('+' | '-')) {
            self.bump();
        }
        let digits_start = self.position;
        while self.peek_char().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let whole = &self.text[digits_start..self.position];
        if self.peek_char() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            while self.peek_char().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            let text = &self.text[start..self.position];
            return text
                .parse::<f64>()
                .map(Literal::Float)
                .or_else(|_| fail(start, format!("invalid number `{text}`")));
        }
        if whole.is_empty() {
            return fail(start, "a sign without a number");
        }
        if whole.len() > 1 && whole.starts_with('0') {
            return fail(start, format!("leading zero in `{whole}`"));
        }
        let text = &self.text[start..self.position];
        text.trim_start_matches('+')
            .parse::<i64>()
            .map(Literal::Integer)
            .or_else(|_| fail(start, format!("integer `{text}` out of range")))
    }

    fn next_token(&mut self) -> Result<Option<(usize, Token)>, PatternError> {
        self.skip_blanks()?;
        let start = self.position;
        let Some(c) = self.peek_char() else {
            return Ok(None);
        };
        let single = |token| Ok(Some((start, token)));
        match c {
            '[' => {
                self.bump();
                single(Token::LBracket)
            }
            ']' => {
                self.bump();
                single(Token::RBracket)
            }
            '(' => {
                self.bump();
                single(Token::LParen)
            }
            ')' => {
                self.bump();
                single(Token::RParen)
            }
            ':' => {
                self.bump();
                single(Token::Colon)
            }
            ',' => {
                self.bump();
                single(Token::Comma)
            }
            '*' => {
                self.bump();
                single(Token::Asterisk)
            }
            '\'' => {
                let text = self.quoted()?;
                single(Token::Literal(Literal::String(text)))
            }
            '=' => {
                self.bump();
                if self.peek_char() == Some('=') {
                    self.bump();
                }
                single(Token::Compare(Operator::Equal))
            }
            '!' => {
                self.bump();
                if self.bump() == Some('=') {
                    single(Token::Compare(Operator::NotEqual))
                } else {
                    fail(start, "`!` not followed by `=`")
                }
            }
            '<' => {
                self.bump();
                match self.peek_char() {
                    Some('=') => {
                        self.bump();
                        single(Token::Compare(Operator::LessOrEqual))
                    }
                    Some('>') => {
                        self.bump();
                        single(Token::Compare(Operator::NotEqual))
                    }
                    _ => single(Token::Compare(Operator::Less)),
                }
            }
            '>' => {
                self.bump();
                if self.peek_char() == Some('=') {
                    self.bump();
                    single(Token::Compare(Operator::GreaterOrEqual))
                } else {
                    single(Token::Compare(Operator::Greater))
                }
            }
            '.' if self.peek_second().is_some_and(|c| c.is_ascii_digit()) => {
                let literal = self.number()?;
                single(Token::Literal(literal))
            }
            '.' => {
                self.bump();
                single(Token::Dot)
            }
            '+' | '-' | '0'..='9' => {
                let literal = self.number()?;
                single(Token::Literal(literal))
            }
            'h' | 'b' | 't' if self.peek_second() == Some('\'') => {
                self.bump();
                let body_start = self.position;
                let text = self.quoted()?;
                let literal = match c {
                    'h' => {
                        if text.len() % 2 != 0 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
                            return fail(body_start, "a hex literal needs pairs of hex digits");
                        }
                        Literal::Hex(text)
                    }
                    'b' => {
                        if !valid_base64(&text) {
                            return fail(body_start, "invalid base64 in a binary literal");
                        }
                        Literal::Binary(text)
                    }
                    _ => {
                        if !valid_timestamp(&text) {
                            return fail(
                                body_start,
                                format!("invalid timestamp `{text}` (RFC 3339 in UTC, `Z`)"),
                            );
                        }
                        Literal::Timestamp(text)
                    }
                };
                single(Token::Literal(literal))
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while self
                    .peek_char()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    self.bump();
                }
                let word = &self.text[start..self.position];
                let token = match word {
                    "true" => Token::Literal(Literal::Bool(true)),
                    "false" => Token::Literal(Literal::Bool(false)),
                    _ => match KEYWORDS.iter().find(|keyword| **keyword == word) {
                        Some(keyword) => Token::Keyword(keyword),
                        None => Token::Identifier(word.to_owned()),
                    },
                };
                single(token)
            }
            other => fail(start, format!("unexpected character `{other}`")),
        }
    }
}

fn valid_base64(text: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).is_ok() && !text.is_empty()
}

fn valid_timestamp(text: &str) -> bool {
    text.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, PatternError> {
    let mut lexer = Lexer { text, position: 0 };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token()? {
        tokens.push(token);
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Tree

/// One step of an object path after the first property.
#[derive(Debug, Clone, PartialEq)]
pub enum PathStep {
    /// `.name` or `.'name'`.
    Key(String),
    /// `[n]`.
    Index(i64),
    /// `[*]`.
    Any,
}

/// `object-type:property.sub[0]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPath {
    /// The STIX cyber-observable type (`ipv4-addr`).
    pub object_type: String,
    /// The first property (`value`).
    pub property: String,
    /// Further steps.
    pub steps: Vec<PathStep>,
}

impl ObjectPath {
    /// The path as [`MAPPING`] writes it: hash names canonical
    /// (`SHA-256`), indexes as `[*]`.
    fn canonical(&self) -> String {
        let mut out = format!("{}:{}", self.object_type, self.property);
        let hashes = self.property == "hashes";
        for (position, step) in self.steps.iter().enumerate() {
            match step {
                PathStep::Key(key) if hashes && position == 0 => {
                    out.push('.');
                    out.push_str(&canonical_hash(key));
                }
                PathStep::Key(key) => {
                    out.push('.');
                    out.push_str(key);
                }
                PathStep::Index(_) | PathStep::Any => out.push_str("[*]"),
            }
        }
        out
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.object_type, self.property)?;
        for step in &self.steps {
            match step {
                PathStep::Key(key) if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    write!(f, ".{key}")?
                }
                PathStep::Key(key) => write!(f, ".'{key}'")?,
                PathStep::Index(index) => write!(f, "[{index}]")?,
                PathStep::Any => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

/// `SHA256`, `sha-256` → `SHA-256`; `md5` → `MD5`.
fn canonical_hash(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    for family in ["SHA3-", "SHA"] {
        if let Some(rest) = upper.strip_prefix(family) {
            let bits = rest.trim_start_matches('-');
            if !bits.is_empty() && bits.chars().all(|c| c.is_ascii_digit()) {
                return format!("{}-{bits}", family.trim_end_matches('-'));
            }
        }
    }
    upper
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// One literal.
    Single(Literal),
    /// `(a, b, …)` of `IN`.
    Set(Vec<Literal>),
}

/// A comparison expression (inside `[...]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// `path [NOT] op value`.
    Test {
        /// The object path.
        path: ObjectPath,
        /// `NOT` before the operator.
        negated: bool,
        /// The operator.
        operator: Operator,
        /// The value(s).
        operand: Operand,
    },
    /// `EXISTS path`.
    Exists(ObjectPath),
    /// All of these.
    And(Vec<Comparison>),
    /// Any of these.
    Or(Vec<Comparison>),
}

/// A qualifier of an observation expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Qualifier {
    /// `WITHIN n SECONDS`.
    Within(f64),
    /// `REPEATS n TIMES`.
    Repeats(i64),
    /// `START t'…' STOP t'…'`.
    StartStop(String, String),
}

/// An observation expression: the whole pattern is one.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// `[comparison]`.
    Simple(Comparison),
    /// All observed.
    And(Vec<Observation>),
    /// Any observed.
    Or(Vec<Observation>),
    /// Observed in this order.
    FollowedBy(Vec<Observation>),
    /// With a qualifier.
    Qualified(Box<Observation>, Qualifier),
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    position: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position).map(|(_, token)| token)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.position)
            .map_or(self.end, |(offset, _)| *offset)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).map(|(_, token)| token.clone());
        if token.is_some() {
            self.position += 1;
        }
        token
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Keyword(k)) if *k == keyword)
    }

    fn expect(&mut self, expected: &Token, what: &str) -> Result<(), PatternError> {
        let offset = self.offset();
        match self.next() {
            Some(token) if &token == expected => Ok(()),
            Some(token) => fail(offset, format!("expected {what}, found {}", describe(&token))),
            None => fail(offset, format!("expected {what}, found the end")),
        }
    }

    fn descend(&mut self) -> Result<(), PatternError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return fail(self.offset(), format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn pattern(&mut self) -> Result<Observation, PatternError> {
        if self.tokens.is_empty() {
            return fail(0, "empty pattern");
        }
        let observation = self.followed_by()?;
        match self.peek() {
            None => Ok(observation),
            Some(token) => {
                let found = describe(token);
                fail(self.offset(), format!("unexpected {found} after the pattern"))
            }
        }
    }

    fn followed_by(&mut self) -> Result<Observation, PatternError> {
        let mut items = vec![self.observation_or()?];
        while self.at_keyword("FOLLOWEDBY") {
            self.next();
            items.push(self.observation_or()?);
        }
        Ok(collapse(items, Observation::FollowedBy))
    }

    fn observation_or(&mut self) -> Result<Observation, PatternError> {
        let mut items = vec![self.observation_and()?];
        while self.at_keyword("OR") {
            self.next();
            items.push(self.observation_and()?);
        }
        Ok(collapse(items, Observation::Or))
    }

    fn observation_and(&mut self) -> Result<Observation, PatternError> {
        let mut items = vec![self.qualified()?];
        while self.at_keyword("AND") {
            self.next();
            items.push(self.qualified()?);
        }
        Ok(collapse(items, Observation::And))
    }

    fn qualified(&mut self) -> Result<Observation, PatternError> {
        let mut observation = self.observation()?;
        loop {
            let qualifier = if self.at_keyword("WITHIN") {
                self.next();
                let offset = self.offset();
                let seconds = match self.next() {
                    Some(Token::Literal(Literal::Integer(n))) if n > 0 => n as f64,
                    Some(Token::Literal(Literal::Float(n))) if n > 0.0 => n,
                    _ => return fail(offset, "WITHIN needs a positive number of seconds"),
                };
                self.expect(&Token::Keyword("SECONDS"), "SECONDS")?;
                Qualifier::Within(seconds)
            } else if self.at_keyword("REPEATS") {
                self.next();
                let offset = self.offset();
                let times = match self.next() {
                    Some(Token::Literal(Literal::Integer(n))) if n > 0 => n,
                    _ => return fail(offset, "REPEATS needs a positive integer"),
                };
                self.expect(&Token::Keyword("TIMES"), "TIMES")?;
                Qualifier::Repeats(times)
            } else if self.at_keyword("START") {
                self.next();
                let start = self.timestamp("START")?;
                self.expect(&Token::Keyword("STOP"), "STOP")?;
                let stop = self.timestamp("STOP")?;
                Qualifier::StartStop(start, stop)
            } else {
                return Ok(observation);
            };
            observation = Observation::Qualified(Box::new(observation), qualifier);
        }
    }

    fn timestamp(&mut self, keyword: &str) -> Result<String, PatternError> {
        let offset = self.offset();
        match self.next() {
            Some(Token::Literal(Literal::Timestamp(text))) => Ok(text),
            _ => fail(offset, format!("{keyword} needs a t'…' timestamp")),
        }
    }

    fn observation(&mut self) -> Result<Observation, PatternError> {
        let offset = self.offset();
        match self.next() {
            Some(Token::LBracket) => {
                self.descend()?;
                let comparison = self.comparison_or()?;
                self.expect(&Token::RBracket, "`]`")?;
                self.depth -= 1;
                Ok(Observation::Simple(comparison))
            }
            Some(Token::LParen) => {
                self.descend()?;
                let inner = self.followed_by()?;
                self.expect(&Token::RParen, "`)`")?;
                self.depth -= 1;
                Ok(inner)
            }
            Some(token) => fail(
                offset,
                format!(
                    "expected `[` or `(` starting an observation, found {}",
                    describe(&token)
                ),
            ),
            None => fail(
                offset,
                "expected `[` or `(` starting an observation, found the end",
            ),
        }
    }

    fn comparison_or(&mut self) -> Result<Comparison, PatternError> {
        let mut items = vec![self.comparison_and()?];
        while self.at_keyword("OR") {
            self.next();
            items.push(self.comparison_and()?);
        }
        Ok(collapse(items, Comparison::Or))
    }

    fn comparison_and(&mut self) -> Result<Comparison, PatternError> {
        let mut items = vec![self.property_test()?];
        while self.at_keyword("AND") {
            self.next();
            items.push(self.property_test()?);
        }
        Ok(collapse(items, Comparison::And))
    }

    fn property_test(&mut self) -> Result<Comparison, PatternError> {
        if self.peek() == Some(&Token::LParen) {
            self.next();
            self.descend()?;
            let inner = self.comparison_or()?;
            self.expect(&Token::RParen, "`)`")?;
            self.depth -= 1;
            return Ok(inner);
        }
        if self.at_keyword("EXISTS") {
            self.next();
            return Ok(Comparison::Exists(self.object_path()?));
        }
        let path = self.object_path()?;
        let negated = self.at_keyword("NOT");
        if negated {
            self.next();
        }
        let offset = self.offset();
        let operator = match self.next() {
            Some(Token::Compare(operator)) => operator,
            Some(Token::Keyword("IN")) => Operator::In,
            Some(Token::Keyword("LIKE")) => Operator::Like,
            Some(Token::Keyword("MATCHES")) => Operator::Matches,
            Some(Token::Keyword("ISSUBSET")) => Operator::IsSubset,
            Some(Token::Keyword("ISSUPERSET")) => Operator::IsSuperset,
            Some(token) => {
                return fail(
                    offset,
                    format!("expected a comparison operator, found {}", describe(&token)),
                )
            }
            None => return fail(offset, "expected a comparison operator, found the end"),
        };
        let operand = match operator {
            Operator::In => Operand::Set(self.set()?),
            _ => {
                let offset = self.offset();
                let literal = match self.next() {
                    Some(Token::Literal(literal)) => literal,
                    Some(token) => {
                        return fail(offset, format!("expected a value, found {}", describe(&token)))
                    }
                    None => return fail(offset, "expected a value, found the end"),
                };
                let fits = match operator {
                    Operator::Equal | Operator::NotEqual => true,
                    Operator::Less | Operator::LessOrEqual | Operator::Greater | Operator::GreaterOrEqual => {
                        !matches!(literal, Literal::Bool(_))
                    }
                    _ => matches!(literal, Literal::String(_)),
                };
                if !fits {
                    return fail(offset, format!("{operator} cannot take this kind of value"));
                }
                Operand::Single(literal)
            }
        };
        Ok(Comparison::Test {
            path,
            negated,
            operator,
            operand,
        })
    }

    fn set(&mut self) -> Result<Vec<Literal>, PatternError> {
        self.expect(&Token::LParen, "`(` opening the set of IN")?;
        let mut items = Vec::new();
        if self.peek() == Some(&Token::RParen) {
            self.next();
            return Ok(items);
        }
        loop {
            let offset = self.offset();
            match self.next() {
                Some(Token::Literal(literal)) => items.push(literal),
                Some(token) => {
                    return fail(
                        offset,
                        format!("expected a value in the set, found {}", describe(&token)),
                    )
                }
                None => return fail(offset, "unterminated set"),
            }
            let offset = self.offset();
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => return Ok(items),
                Some(token) => {
                    return fail(
                        offset,
                        format!("expected `,` or `)` in the set, found {}", describe(&token)),
                    )
                }
                None => return fail(offset, "unterminated set"),
            }
        }
    }

    fn object_path(&mut self) -> Result<ObjectPath, PatternError> {
        let offset = self.offset();
        let object_type = match self.next() {
            Some(Token::Identifier(name)) => name,
            Some(token) => {
                return fail(
                    offset,
                    format!("expected an object type, found {}", describe(&token)),
                )
            }
            None => return fail(offset, "expected an object type, found the end"),
        };
        self.expect(&Token::Colon, "`:` after the object type")?;
        let offset = self.offset();
        let property = match self.next() {
            Some(Token::Identifier(name)) if !name.contains('-') => name,
            Some(Token::Literal(Literal::String(name))) => name,
            Some(token) => {
                return fail(
                    offset,
                    format!("expected a property name, found {}", describe(&token)),
                )
            }
            None => return fail(offset, "expected a property name, found the end"),
        };
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                Some(Token::Dot) => {
                    self.next();
                    let offset = self.offset();
                    match self.next() {
                        Some(Token::Identifier(name)) if !name.contains('-') => {
                            steps.push(PathStep::Key(name))
                        }
                        Some(Token::Literal(Literal::String(name))) => steps.push(PathStep::Key(name)),
                        Some(token) => {
                            return fail(
                                offset,
                                format!("expected a property name, found {}", describe(&token)),
                            )
                        }
                        None => return fail(offset, "expected a property name, found the end"),
                    }
                }
                // `[` after a path is a list index; an observation never
                // follows a property directly, so this is not ambiguous.
                Some(Token::LBracket) => {
                    self.next();
                    let offset = self.offset();
                    match self.next() {
                        Some(Token::Literal(Literal::Integer(index))) => steps.push(PathStep::Index(index)),
                        Some(Token::Asterisk) => steps.push(PathStep::Any),
                        Some(token) => {
                            return fail(
                                offset,
                                format!("expected an index or `*`, found {}", describe(&token)),
                            )
                        }
                        None => return fail(offset, "expected an index or `*`, found the end"),
                    }
                    self.expect(&Token::RBracket, "`]` closing the index")?;
                }
                _ => break,
            }
        }
        Ok(ObjectPath {
            object_type,
            property,
            steps,
        })
    }
}

fn collapse<T>(mut items: Vec<T>, join: fn(Vec<T>) -> T) -> T {
    if items.len() == 1 {
        if let Some(only) = items.pop() {
            return only;
        }
    }
    join(items)
}

fn describe(token: &Token) -> String {
    match token {
        Token::LBracket => "`[`".to_owned(),
        Token::RBracket => "`]`".to_owned(),
        Token::LParen => "`(`".to_owned(),
        Token::RParen => "`)`".to_owned(),
        Token::Colon => "`:`".to_owned(),
        Token::Dot => "`.`".to_owned(),
        Token::Comma => "`,`".to_owned(),
        Token::Asterisk => "`*`".to_owned(),
        Token::Compare(operator) => format!("`{operator}`"),
        Token::Identifier(name) => format!("`{name}`"),
        Token::Keyword(keyword) => format!("`{keyword}`"),
        Token::Literal(_) => "a value".to_owned(),
    }
}

/// Parses a STIX 2.1 pattern.
pub fn parse(text: &str) -> Result<Observation, PatternError> {
    let tokens = tokenize(text)?;
    Parser {
        tokens,
        position: 0,
        end: text.len(),
        depth: 0,
    }
    .pattern()
}

// ---------------------------------------------------------------------------
// Mapping

/// What a pattern gives in ECS: fields (relative to the prefix) with their
/// values in first-seen order, the indicator types, and what was not mapped.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Mapped {
    pub fields: Vec<(String, Vec<Value>)>,
    pub types: Vec<String>,
    pub ips: Vec<Value>,
    pub hashes: Vec<Value>,
    pub unmapped: Vec<String>,
}

impl Mapped {
    fn add(&mut self, field: &str, value: Value) {
        match self.fields.iter_mut().find(|(name, _)| name == field) {
            Some((_, values)) => {
                if !values.contains(&value) {
                    values.push(value);
                }
            }
            None => self.fields.push((field.to_owned(), vec![value])),
        }
    }

    fn add_type(&mut self, object_type: &str) {
        if ECS_INDICATOR_TYPES.contains(&object_type) && !self.types.iter().any(|t| t == object_type) {
            self.types.push(object_type.to_owned());
        }
    }
}

fn push_unique(list: &mut Vec<Value>, value: Value) {
    if !list.contains(&value) {
        list.push(value);
    }
}

/// The ECS fields of a parsed pattern.
pub(crate) fn map(pattern: &Observation) -> Mapped {
    let mut mapped = Mapped::default();
    let mut tests = Vec::new();
    let mut followed_by = false;
    collect_observation(pattern, &mut tests, &mut followed_by);
    for comparison in &tests {
        if let Comparison::Test { path, .. } | Comparison::Exists(path) = comparison {
            mapped.add_type(&path.object_type);
        }
    }
    if followed_by {
        mapped
            .unmapped
            .push("FOLLOWEDBY: a sequence of observations cannot be matched value by value".to_owned());
        return mapped;
    }
    for comparison in tests {
        map_comparison(comparison, &mut mapped);
    }
    mapped
}

fn collect_observation<'a>(
    observation: &'a Observation,
    tests: &mut Vec<&'a Comparison>,
    followed_by: &mut bool,
) {
    match observation {
        Observation::Simple(comparison) => collect_comparison(comparison, tests),
        Observation::And(items) | Observation::Or(items) => {
            for item in items {
                collect_observation(item, tests, followed_by);
            }
        }
        Observation::FollowedBy(items) => {
            *followed_by = true;
            for item in items {
                collect_observation(item, tests, followed_by);
            }
        }
        Observation::Qualified(inner, _) => collect_observation(inner, tests, followed_by),
    }
}

fn collect_comparison<'a>(comparison: &'a Comparison, tests: &mut Vec<&'a Comparison>) {
    match comparison {
        Comparison::And(items) | Comparison::Or(items) => {
            for item in items {
                collect_comparison(item, tests);
            }
        }
        leaf => tests.push(leaf),
    }
}

fn map_comparison(comparison: &Comparison, mapped: &mut Mapped) {
    let (path, negated, operator, operand) = match comparison {
        Comparison::Test {
            path,
            negated,
            operator,
            operand,
        } => (path, *negated, *operator, operand),
        Comparison::Exists(path) => {
            mapped.unmapped.push(format!("EXISTS {path}: no value to match"));
            return;
        }
        // Flattened by collect_comparison.
        Comparison::And(_) | Comparison::Or(_) => return,
    };
    let canonical = path.canonical();
    let Some((_, field, kind)) = MAPPING.iter().find(|(stix, _, _)| *stix == canonical) else {
        mapped
            .unmapped
            .push(format!("{path}: no ECS field for this object path"));
        return;
    };
    if negated || !matches!(operator, Operator::Equal | Operator::In) {
        let not = if negated { "NOT " } else { "" };
        mapped.unmapped.push(format!(
            "{path} {not}{operator}: only `=` and `IN` comparisons map to ECS values"
        ));
        return;
    }
    let literals: Vec<&Literal> = match operand {
        Operand::Single(literal) => vec![literal],
        Operand::Set(items) => items.iter().collect(),
    };
    for literal in literals {
        if let Err(reason) = map_value(field, *kind, literal, mapped) {
            mapped.unmapped.push(format!("{path}: {reason}"));
        }
    }
}

fn text_of(literal: &Literal) -> Option<&str> {
    match literal {
        Literal::String(text) | Literal::Timestamp(text) => Some(text),
        _ => None,
    }
}

fn map_value(field: &str, kind: Kind, literal: &Literal, mapped: &mut Mapped) -> Result<(), String> {
    let need_text = || text_of(literal).ok_or_else(|| "expected a string value".to_owned());
    match kind {
        Kind::Text => {
            let text = need_text()?;
            mapped.add(field, Value::String(text.to_owned()));
        }
        Kind::Timestamp => {
            let text = need_text()?;
            mapped.add(field, Value::String(text.to_owned()));
        }
        Kind::Ip => {
            let text = need_text()?.trim();
            if let Ok(address) = text.parse::<std::net::IpAddr>() {
                let value = Value::String(address.to_string());
                push_unique(&mut mapped.ips, value.clone());
                mapped.add(field, value);
            } else if text.parse::<ipnet::IpNet>().is_ok() {
                // A CIDR: the indicator's value, but not one address for `related.ip`.
                mapped.add(field, Value::String(text.to_owned()));
            } else {
                return Err(format!("`{text}` is not an IP address or CIDR"));
            }
        }
        Kind::Url => {
            let text = need_text()?;
            mapped.add("url.original", Value::String(text.to_owned()));
            mapped.add("url.full", Value::String(text.to_owned()));
            if let Some(parts) = crate::uri::url_parts(text) {
                for (part, value) in parts {
                    mapped.add(&format!("url.{part}"), value);
                }
            }
        }
        Kind::HexHash => {
            let text = need_text()?.trim().to_ascii_lowercase();
            if text.is_empty() || !text.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("`{text}` is not a hex digest"));
            }
            push_unique(&mut mapped.hashes, Value::String(text.clone()));
            mapped.add(field, Value::String(text));
        }
        Kind::OtherHash => {
            let text = need_text()?;
            push_unique(&mut mapped.hashes, Value::String(text.to_owned()));
            mapped.add(field, Value::String(text.to_owned()));
        }
        Kind::Integer => {
            let number = match literal {
                Literal::Integer(n) if *n >= 0 => *n,
                Literal::String(text) => text
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("`{text}` is not a non-negative integer"))?,
                _ => return Err("expected a non-negative integer".to_owned()),
            };
            mapped.add(field, Value::Number(number.into()));
        }
        Kind::RegistryKey => {
            let text = need_text()?;
            mapped.add("registry.path", Value::String(text.to_owned()));
            let (hive, key) = match text.split_once('\\') {
                Some((hive, key)) => (hive, Some(key)),
                None => (text, None),
            };
            if let Some(short) = hive_abbreviation(hive) {
                mapped.add("registry.hive", Value::String(short.to_owned()));
                if let Some(key) = key.filter(|key| !key.is_empty()) {
                    mapped.add("registry.key", Value::String(key.to_owned()));
                }
            }
        }
        Kind::Mac => {
            let text = need_text()?;
            mapped.add(field, Value::String(ecs_mac(text)));
        }
        Kind::Serial => {
            let text = need_text()?;
            let serial: String = text
                .chars()
                .filter(|c| *c != ':' && !c.is_whitespace())
                .collect::<String>()
                .to_ascii_uppercase();
            mapped.add(field, Value::String(serial));
        }
    }
    Ok(())
}

/// ECS's hive abbreviations (`HKLM`), from the full or short name, any case.
fn hive_abbreviation(hive: &str) -> Option<&'static str> {
    match hive.to_ascii_uppercase().as_str() {
        "HKEY_LOCAL_MACHINE" | "HKLM" => Some("HKLM"),
        "HKEY_CURRENT_USER" | "HKCU" => Some("HKCU"),
        "HKEY_CLASSES_ROOT" | "HKCR" => Some("HKCR"),
        "HKEY_USERS" | "HKU" => Some("HKU"),
        "HKEY_CURRENT_CONFIG" | "HKCC" => Some("HKCC"),
        "HKEY_PERFORMANCE_DATA" | "HKPD" => Some("HKPD"),
        _ => None,
    }
}

/// `00:00:5e:00:53:23` → `00-00-5E-00-53-23` (RFC 7042, as ECS asks);
/// anything else as given.
fn ecs_mac(text: &str) -> String {
    let octets: Vec<&str> = text.trim().split([':', '-']).collect();
    let well_formed = (octets.len() == 6 || octets.len() == 8)
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.chars().all(|c| c.is_ascii_hexdigit()));
    if well_formed {
        octets.join("-").to_ascii_uppercase()
    } else {
        text.to_owned()
    }
}

// ---------------------------------------------------------------------------
// The processor

/// `stix_pattern` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StixPatternConfig {
    /// The pattern.
    field: String,
    /// The indicator's `pattern_type`: when present and not `stix`, the
    /// pattern is another language (snort, yara, sigma…) and is not parsed.
    #[serde(default)]
    pattern_type_field: Option<String>,
    #[serde(default = "default_prefix")]
    target_prefix: String,
    /// Also `related.ip` (single addresses) and `related.hash`.
    #[serde(default = "crate::common::yes")]
    related: bool,
    /// Where the reasons for what was not mapped go (a list of strings).
    #[serde(default)]
    unmapped_field: Option<String>,
    /// Appended to `tags` when nothing of the pattern was mapped.
    #[serde(default = "default_unmapped_tag")]
    unmapped_tag: String,
    /// Appended to `tags` when only part of it was.
    #[serde(default = "default_partial_tag")]
    partial_tag: String,
    #[serde(default)]
    ignore_missing: bool,
}

fn default_prefix() -> String {
    "threat.indicator".to_owned()
}

fn default_unmapped_tag() -> String {
    "stix-pattern-unmapped".to_owned()
}

fn default_partial_tag() -> String {
    "stix-pattern-partially-mapped".to_owned()
}

pub(crate) struct StixPattern {
    field: FieldPath,
    pattern_type: Option<FieldPath>,
    prefix: String,
    related: bool,
    unmapped_field: Option<FieldPath>,
    unmapped_tag: Option<String>,
    partial_tag: Option<String>,
    ignore_missing: bool,
}

impl StepConfig for StixPatternConfig {
    const NAME: &'static str = "stix_pattern";
    type Step = StixPattern;
    fn build(self, origin: &Origin, _: &BuildContext) -> Result<StixPattern, ConfigError> {
        let prefix = path_at(&self.target_prefix, &origin.child("target_prefix"))?;
        let non_empty = |tag: String| (!tag.trim().is_empty()).then_some(tag);
        Ok(StixPattern {
            field: path_at(&self.field, &origin.child("field"))?,
            pattern_type: self
                .pattern_type_field
                .as_deref()
                .map(|raw| path_at(raw, &origin.child("pattern_type_field")))
                .transpose()?,
            prefix: prefix.as_str().to_owned(),
            related: self.related,
            unmapped_field: self
                .unmapped_field
                .as_deref()
                .map(|raw| path_at(raw, &origin.child("unmapped_field")))
                .transpose()?,
            unmapped_tag: non_empty(self.unmapped_tag),
            partial_tag: non_empty(self.partial_tag),
            ignore_missing: self.ignore_missing,
        })
    }
}

/// A list of one value is written as that value.
fn one_or_list(mut values: Vec<Value>) -> Value {
    if values.len() == 1 {
        values.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(values)
    }
}

fn field(raw: &str) -> Result<FieldPath, ProcessorError> {
    FieldPath::parse(raw).map_err(|error| ProcessorError::new(error.to_string()))
}

impl StixPattern {
    fn tag(&self, event: &mut Event, tag: &Option<String>) -> Result<(), ProcessorError> {
        let Some(tag) = tag else { return Ok(()) };
        let path = field("tags")?;
        let mut tags = match event.remove(&path) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(other) => vec![other],
        };
        push_unique(&mut tags, Value::String(tag.clone()));
        write(event, &path, Value::Array(tags))
    }

    fn report(
        &self,
        event: &mut Event,
        reasons: Vec<String>,
        nothing_mapped: bool,
    ) -> Result<(), ProcessorError> {
        if reasons.is_empty() {
            return Ok(());
        }
        if let Some(path) = &self.unmapped_field {
            write(
                event,
                path,
                Value::Array(reasons.into_iter().map(Value::String).collect()),
            )?;
        }
        let tag = if nothing_mapped {
            &self.unmapped_tag
        } else {
            &self.partial_tag
        };
        self.tag(event, tag)
    }
}

impl Step for StixPattern {
    fn apply(&self, event: &mut Event) -> Result<ProcessOutcome, ProcessorError> {
        let pattern = match event.get(&self.field) {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None if self.ignore_missing => return Ok(ProcessOutcome::Keep),
            Some(Value::Null) | None => return Err(crate::common::missing(&self.field)),
            Some(other) => {
                return Err(ProcessorError::new(format!(
                    "field [{}] holds a {}, not a STIX pattern",
                    self.field,
                    threatbeat_core::path::json_kind(other)
                )))
            }
        };
        if let Some(path) = &self.pattern_type {
            if let Some(Value::String(language)) = event.get(path) {
                if !language.eq_ignore_ascii_case("stix") {
                    let reason = format!("pattern_type {language}: not STIX patterning, kept as it is");
                    self.report(event, vec![reason], true)?;
                    return Ok(ProcessOutcome::Keep);
                }
            }
        }
        let tree = match parse(&pattern) {
            Ok(tree) => tree,
            Err(error) => {
                let message = format!("invalid STIX pattern {error}");
                self.report(event, vec![message.clone()], true)?;
                return Err(ProcessorError::new(message));
            }
        };
        let mapped = map(&tree);
        let nothing_mapped = mapped.fields.is_empty();
        if !mapped.types.is_empty() {
            write(
                event,
                &field(&format!("{}.type", self.prefix))?,
                one_or_list(mapped.types.iter().map(|t| Value::String(t.clone())).collect()),
            )?;
        }
        for (name, values) in mapped.fields {
            write(
                event,
                &field(&format!("{}.{name}", self.prefix))?,
                one_or_list(values),
            )?;
        }
        if self.related {
            for (name, values) in [("related.ip", mapped.ips), ("related.hash", mapped.hashes)] {
                if values.is_empty() {
                    continue;
                }
                let path = field(name)?;
                let mut list = match event.remove(&path) {
                    Some(Value::Array(items)) => items,
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => vec![other],
                };
                for value in values {
                    push_unique(&mut list, value);
                }
                write(event, &path, Value::Array(list))?;
            }
        }
        self.report(event, mapped.unmapped, nothing_mapped)?;
        Ok(ProcessOutcome::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{chain, run};
    use serde_json::json;

    fn mapping(pattern: &str) -> Value {
        let c = chain(json!([{"stix_pattern": {"field": "p", "unmapped_field": "why"}}]));
        let mut out = run(&c, json!({"p": pattern}));
        if let Some(map) = out.as_object_mut() {
            map.remove("p");
        }
        out
    }

    #[test]
    fn parses_the_grammar_with_precedence_and_qualifiers() {
        let tree =
            parse("[a:x = 1] OR [b:y = 2] AND [c:z = 3] FOLLOWEDBY [d:w = 'q'] WITHIN 5 SECONDS").unwrap();
        let Observation::FollowedBy(items) = tree else {
            panic!("{tree:?}")
        };
        assert_eq!(items.len(), 2);
        let Observation::Or(alternatives) = &items[0] else {
            panic!("{:?}", items[0])
        };
        assert!(
            matches!(alternatives[1], Observation::And(_)),
            "AND binds tighter than OR"
        );
        assert!(matches!(items[1], Observation::Qualified(_, Qualifier::Within(s)) if s == 5.0));

        let tree = parse("[file:hashes.'SHA-256' = 'ab' AND (file:size > 10 OR file:name NOT LIKE 'x%')] REPEATS 2 TIMES START t'2016-06-01T00:00:00Z' STOP t'2016-07-01T00:00:00.5Z'").unwrap();
        let Observation::Qualified(inner, Qualifier::StartStop(start, stop)) = tree else {
            panic!()
        };
        assert_eq!(
            (start.as_str(), stop.as_str()),
            ("2016-06-01T00:00:00Z", "2016-07-01T00:00:00.5Z")
        );
        let Observation::Qualified(inner, Qualifier::Repeats(2)) = *inner else {
            panic!()
        };
        let Observation::Simple(Comparison::And(tests)) = *inner else {
            panic!()
        };
        let Comparison::Test { path, operand, .. } = &tests[0] else {
            panic!()
        };
        assert_eq!(path.to_string(), "file:hashes.'SHA-256'");
        assert_eq!(path.canonical(), "file:hashes.SHA-256");
        assert_eq!(operand, &Operand::Single(Literal::String("ab".into())));
        let Comparison::Or(alternatives) = &tests[1] else {
            panic!()
        };
        assert!(matches!(
            &alternatives[1],
            Comparison::Test {
                negated: true,
                operator: Operator::Like,
                ..
            }
        ));
    }

    #[test]
    fn literals_escapes_comments_and_paths() {
        let tree = parse(
            "/* c */ [windows-registry-key:key = 'HKLM\\\\Soft\\'s' // line\n AND x-y:values[0].'a b' IN (h'ff00', b'AQID', -1, +2, .5, -0.25, true, t'2020-01-01T00:00:00Z') AND EXISTS p:q[*]]",
        )
        .unwrap();
        let Observation::Simple(Comparison::And(tests)) = tree else {
            panic!()
        };
        assert_eq!(
            tests[0],
            Comparison::Test {
                path: ObjectPath {
                    object_type: "windows-registry-key".into(),
                    property: "key".into(),
                    steps: vec![]
                },
                negated: false,
                operator: Operator::Equal,
                operand: Operand::Single(Literal::String("HKLM\\Soft's".into())),
            }
        );
        let Comparison::Test {
            path,
            operand: Operand::Set(set),
            ..
        } = &tests[1]
        else {
            panic!()
        };
        assert_eq!(path.steps, vec![PathStep::Index(0), PathStep::Key("a b".into())]);
        assert_eq!(
            set,
            &vec![
                Literal::Hex("ff00".into()),
                Literal::Binary("AQID".into()),
                Literal::Integer(-1),
                Literal::Integer(2),
                Literal::Float(0.5),
                Literal::Float(-0.25),
                Literal::Bool(true),
                Literal::Timestamp("2020-01-01T00:00:00Z".into()),
            ]
        );
        assert!(matches!(&tests[2], Comparison::Exists(path) if path.steps == vec![PathStep::Any]));
    }

    #[test]
    fn errors_name_the_offset_and_the_reason() {
        let cases = [
            ("", 0, "empty pattern"),
            ("[ipv4-addr:value = '1.2.3.4'", 28, "expected `]`"),
            ("[ipv4-addr:value = '1.2.3.4]", 19, "unterminated string"),
            ("[a:b = 'x\\y']", 9, "invalid escape"),
            ("[a:b = 1] [c:d = 2]", 10, "unexpected `[` after the pattern"),
            ("[a:b ~ 1]", 5, "unexpected character `~`"),
            ("[a:b = h'abc']", 8, "pairs of hex digits"),
            ("[a:b = t'2020-13-01T00:00:00Z']", 8, "invalid timestamp"),
            ("[a:b = 01]", 7, "leading zero"),
            ("[a:b = 99999999999999999999]", 7, "out of range"),
            ("[a:b LIKE 5]", 10, "LIKE cannot take"),
            ("[a:b = 1] WITHIN 0 SECONDS", 17, "positive number"),
            ("[a:b = 1] AND", 13, "found the end"),
            ("[a:b-c = 1]", 3, "property name"),
            ("[a:b IN (1, ]", 12, "expected a value in the set"),
            ("/* never closed", 0, "unterminated comment"),
        ];
        for (pattern, offset, message) in cases {
            let error = parse(pattern).expect_err(pattern);
            assert_eq!(error.offset, offset, "{pattern}: {error}");
            assert!(error.message.contains(message), "{pattern}: {error}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}[a:b = 1]{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        let fine = format!("{}[a:b = 1]{}", "(".repeat(20), ")".repeat(20));
        assert!(parse(&fine).is_ok());
        let deep_comparison = format!("[{}a:b = 1{}]", "(".repeat(5_000), ")".repeat(5_000));
        assert!(parse(&deep_comparison).is_err());
    }

    /// A small xorshift generator: reproducible garbage without a dependency.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_garbled_input_never_panics() {
        let pieces = [
            "[",
            "]",
            "(",
            ")",
            "'",
            "\\",
            "\\'",
            "\\\\",
            ":",
            ".",
            ",",
            "*",
            "=",
            "!=",
            "<",
            ">=",
            "<>",
            " ",
            "AND",
            "OR",
            "NOT",
            "IN",
            "LIKE",
            "MATCHES",
            "EXISTS",
            "FOLLOWEDBY",
            "WITHIN",
            "SECONDS",
            "REPEATS",
            "TIMES",
            "START",
            "STOP",
            "ipv4-addr",
            "value",
            "file",
            "hashes",
            "'SHA-256'",
            "h'",
            "b'",
            "t'",
            "0",
            "-",
            "+",
            "1.5",
            ".",
            "é",
            "🦀",
            "\u{0}",
            "/*",
            "*/",
            "//",
            "\n",
            "true",
            "x-",
            "'2020-01-01T00:00:00Z'",
        ];
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        let c = chain(json!([{"stix_pattern": {"field": "p", "unmapped_field": "why"}}]));
        for _ in 0..20_000 {
            let length = noise.below(24);
            let text: String = (0..length).map(|_| pieces[noise.below(pieces.len())]).collect();
            let _ = parse(&text);
            let _ = run(&c, json!({"p": text}));
        }
        // Valid patterns with one byte garbled, at every position.
        let valid =
            "[ipv4-addr:value = '198.51.100.1' OR file:hashes.'SHA-256' IN ('aa', 'bb')] WITHIN 60 SECONDS";
        for position in 0..valid.len() {
            for replacement in ["", "'", "[", "]", "\\", "é", " "] {
                let mut text = valid.as_bytes()[..position].to_vec();
                text.extend_from_slice(replacement.as_bytes());
                text.extend_from_slice(&valid.as_bytes()[position + 1..]);
                let text = String::from_utf8_lossy(&text);
                let _ = parse(&text);
            }
        }
        // Arbitrary bytes read as text.
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..noise.below(40)).map(|_| noise.next() as u8).collect();
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn maps_every_observable_of_the_table() {
        assert_eq!(
            mapping("[ipv4-addr:value = '198.51.100.7']"),
            json!({"threat": {"indicator": {"type": "ipv4-addr", "ip": "198.51.100.7"}}, "related": {"ip": ["198.51.100.7"]}})
        );
        assert_eq!(
            mapping("[ipv4-addr:value = '203.0.113.0/24']"),
            json!({"threat": {"indicator": {"type": "ipv4-addr", "ip": "203.0.113.0/24"}}}),
            "a CIDR is the indicator, not one related address"
        );
        assert_eq!(
            mapping("[url:value = 'https://evil.example:8443/a/b.php?x=1']")["threat"]["indicator"]["url"],
            json!({"original": "https://evil.example:8443/a/b.php?x=1", "full": "https://evil.example:8443/a/b.php?x=1",
                   "scheme": "https", "domain": "evil.example", "port": 8443, "path": "/a/b.php",
                   "extension": "php", "query": "x=1"})
        );
        assert_eq!(
            mapping("[file:hashes.MD5 = 'D41D8CD98F00B204E9800998ECF8427E' AND file:hashes.sha256 = 'aa' AND file:hashes.'SSDEEP' = '3:a:b' AND file:name = 'x.exe' AND file:size = 10]"),
            json!({"threat": {"indicator": {"type": "file", "file": {"hash": {"md5": "d41d8cd98f00b204e9800998ecf8427e", "sha256": "aa", "ssdeep": "3:a:b"}, "name": "x.exe", "size": 10}}},
                   "related": {"hash": ["d41d8cd98f00b204e9800998ecf8427e", "aa", "3:a:b"]}})
        );
        assert_eq!(
            mapping("[windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\\\Software\\\\Bob\\'s Run']")["threat"]
                ["indicator"],
            json!({"type": "windows-registry-key", "registry": {"path": "HKEY_LOCAL_MACHINE\\Software\\Bob's Run", "hive": "HKLM", "key": "Software\\Bob's Run"}})
        );
        assert_eq!(
            mapping("[autonomous-system:number = 64496 OR autonomous-system:number = '64511']")["threat"]
                ["indicator"],
            json!({"type": "autonomous-system", "as": {"number": [64496, 64511]}})
        );
        assert_eq!(
            mapping("[mac-addr:value = '00:00:5e:00:53:af']")["threat"]["indicator"],
            json!({"type": "mac-addr", "mac": "00-00-5E-00-53-AF"})
        );
        assert_eq!(
            mapping("[x509-certificate:serial_number = '36:f7:d4:32' AND x509-certificate:hashes.'SHA-1' = 'AB12']"),
            json!({"threat": {"indicator": {"type": "x509-certificate", "x509": {"serial_number": "36F7D432"}, "file": {"hash": {"sha1": "ab12"}}}},
                   "related": {"hash": ["ab12"]}})
        );
        assert_eq!(
            mapping(
                "[email-addr:value = 'a@example.com'] OR [domain-name:value IN ('a.example', 'b.example')]"
            )["threat"]["indicator"],
            json!({"type": ["email-addr", "domain-name"], "email": {"address": "a@example.com"}, "url": {"domain": ["a.example", "b.example"]}})
        );
    }

    #[test]
    fn what_cannot_be_matched_is_said_and_tagged() {
        let out = mapping("[file:name MATCHES '^evil.*\\\\.exe$']");
        assert_eq!(out["threat"]["indicator"], json!({"type": "file"}));
        assert_eq!(out["tags"], json!(["stix-pattern-unmapped"]));
        assert_eq!(
            out["why"],
            json!(["file:name MATCHES: only `=` and `IN` comparisons map to ECS values"])
        );

        let out = mapping(
            "[ipv4-addr:value = '198.51.100.1'] OR [ipv4-addr:value != '198.51.100.2'] OR [process:pid = 4]",
        );
        assert_eq!(out["threat"]["indicator"]["ip"], json!("198.51.100.1"));
        assert_eq!(
            out["threat"]["indicator"]["type"],
            json!(["ipv4-addr", "process"])
        );
        assert_eq!(out["tags"], json!(["stix-pattern-partially-mapped"]));
        assert_eq!(out["why"].as_array().map(Vec::len), Some(2));

        let out = mapping("[ipv4-addr:value = '198.51.100.1'] FOLLOWEDBY [domain-name:value = 'a.example']");
        assert!(
            out["threat"]["indicator"].get("ip").is_none(),
            "a sequence maps no value"
        );
        assert_eq!(out["tags"], json!(["stix-pattern-unmapped"]));

        let out = mapping("[ipv4-addr:value = 'not an address']");
        assert_eq!(
            out["why"],
            json!(["ipv4-addr:value: `not an address` is not an IP address or CIDR"])
        );

        // Qualifiers do not stop the mapping.
        let out = mapping(
            "([ipv4-addr:value = '198.51.100.9'] AND [ipv4-addr:value = '198.51.100.10']) WITHIN 300 SECONDS",
        );
        assert_eq!(
            out["threat"]["indicator"]["ip"],
            json!(["198.51.100.9", "198.51.100.10"])
        );
        assert!(out.get("tags").is_none());
    }

    #[test]
    fn other_pattern_languages_and_invalid_patterns() {
        let c = chain(
            json!([{"stix_pattern": {"field": "p", "pattern_type_field": "t", "unmapped_field": "why", "target_prefix": "ti"}}]),
        );
        let out = run(
            &c,
            json!({"p": "alert tcp any any -> any 80 (msg:\"x\";)", "t": "snort", "tags": "feed"}),
        );
        assert_eq!(out["tags"], json!(["feed", "stix-pattern-unmapped"]));
        assert_eq!(
            out["why"],
            json!(["pattern_type snort: not STIX patterning, kept as it is"])
        );
        assert!(out.get("ti").is_none());

        let out = run(&c, json!({"p": "[ipv4-addr:value = ", "t": "stix"}));
        assert_eq!(
            out["error"]["message"],
            json!("stix_pattern: invalid STIX pattern at offset 19: expected a value, found the end")
        );
        assert_eq!(out["tags"], json!(["stix-pattern-unmapped"]));

        let out = run(&c, json!({"p": "[domain-name:value = 'x.example']"}));
        assert_eq!(out["ti"]["url"]["domain"], json!("x.example"));

        let out = run(&c, json!({"q": 1}));
        assert_eq!(
            out["error"]["message"],
            json!("stix_pattern: field [p] not present")
        );
        let quiet = chain(json!([{"stix_pattern": {"field": "p", "ignore_missing": true}}]));
        assert_eq!(run(&quiet, json!({"q": 1})), json!({"q": 1}));
    }

    #[test]
    fn config_is_strict() {
        let error = crate::test_util::build_error(json!([{"stix_pattern": {"field": "p", "target": "x"}}]));
        assert!(error.reason.contains("unknown field `target`"), "{error:?}");
        let error = crate::test_util::build_error(json!([{"stix_pattern": {}}]));
        assert!(error.reason.contains("missing field `field`"), "{error:?}");
    }

    #[test]
    fn the_table_is_well_formed() {
        for (stix, ecs, _) in MAPPING {
            let (object_type, _) = stix.split_once(':').expect("object type");
            assert!(ECS_INDICATOR_TYPES.contains(&object_type), "{stix}");
            assert!(FieldPath::parse(ecs).is_ok(), "{ecs}");
            // Written as a feed would (hash names quoted), it parses back to the entry.
            let written = match stix.split_once("hashes.") {
                Some((head, name)) => format!("{head}hashes.'{name}'"),
                None => stix.replace("[*]", "[0]"),
            };
            let Observation::Simple(Comparison::Test { path, .. }) =
                parse(&format!("[{written} = 'x']")).unwrap()
            else {
                panic!("{stix}")
            };
            assert_eq!(path.canonical(), *stix);
        }
    }
}
