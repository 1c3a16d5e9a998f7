//! Parameter declarations and validation, reproducing pve-common's `JSONSchema.pm`.
//!
//! An endpoint declares its parameters as a `Vec<P>` built with the `P` constructors
//! (`P::int("vmid").fmt(f::VMID).range(100, 999_999_999)`, `P::str("name").opt()`,
//! `P::str("scsi").indexed(0, 30)` for the `scsi[n]` family). The router compiles that list into a
//! [`Schema`] once; every request's merged parameters are checked against it and the handler gets a
//! [`Params`] with typed accessors. Errors carry PVE's exact texts (type check, format, pattern,
//! length, minimum/maximum, enumeration, missing, unknown, `requires`).

pub mod formats;
pub mod guest_formats;
pub mod propstring;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

pub use formats::{Format, f, split_list};
pub use propstring::{PropFormat, PropMap};

use crate::error::{PveError, PveResult};

/// A JSON-schema scalar type as PVE uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    String,
    Integer,
    Number,
    Boolean,
    Array,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::String => "string",
            Ty::Integer => "integer",
            Ty::Number => "number",
            Ty::Boolean => "boolean",
            Ty::Array => "array",
        }
    }
}

/// One parameter (or one key of a property string) declaration.
#[derive(Debug, Clone)]
pub struct P {
    pub name: &'static str,
    pub ty: Ty,
    pub optional: bool,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub enumeration: Option<&'static [&'static str]>,
    /// A regex in PVE's (Perl) syntax; anchored like PVE (`^(?:pat)$`).
    pub pattern: Option<&'static str>,
    pub format: Option<Format>,
    pub max_length: Option<usize>,
    pub min_length: Option<usize>,
    /// Another parameter that must be present when this one is.
    pub requires: Option<&'static str>,
    /// A `name[n]` family: `name<lo>` .. `name<hi>` (always optional).
    pub indexed: Option<(u32, u32)>,
    /// Property strings: the key that may be written without `key=`.
    pub default_key: bool,
    /// Property strings: this key is another name for `alias`.
    pub alias: Option<&'static str>,
    /// Property strings: `model=mac` style, the key itself is stored under `key_alias`.
    pub key_alias: Option<&'static str>,
}

impl P {
    fn new(name: &'static str, ty: Ty) -> P {
        P {
            name,
            ty,
            optional: false,
            minimum: None,
            maximum: None,
            enumeration: None,
            pattern: None,
            format: None,
            max_length: None,
            min_length: None,
            requires: None,
            indexed: None,
            default_key: false,
            alias: None,
            key_alias: None,
        }
    }
    /// A string parameter (required until `.opt()`).
    pub fn str(name: &'static str) -> P {
        P::new(name, Ty::String)
    }
    /// An integer parameter.
    pub fn int(name: &'static str) -> P {
        P::new(name, Ty::Integer)
    }
    /// A number parameter.
    pub fn num(name: &'static str) -> P {
        P::new(name, Ty::Number)
    }
    /// A boolean parameter (`1`/`0` in forms, `true`/`false` in JSON).
    pub fn bool(name: &'static str) -> P {
        P::new(name, Ty::Boolean)
    }
    /// An array parameter (repeated form keys or a JSON array).
    pub fn array(name: &'static str) -> P {
        P::new(name, Ty::Array)
    }
    /// A property-string alias key (`volume` → `file`).
    pub fn alias(name: &'static str, target: &'static str) -> P {
        P { alias: Some(target), optional: true, ..P::new(name, Ty::String) }
    }
    /// A property-string key alias (`virtio=<mac>` stores `model=virtio`, `macaddr=<mac>`).
    pub fn key_alias(name: &'static str, target: &'static str, key: &'static str) -> P {
        P { alias: Some(target), key_alias: Some(key), optional: true, ..P::new(name, Ty::String) }
    }

    /// The path parameter `node` (format pve-node).
    pub fn node() -> P {
        P::str("node").fmt(f::NODE)
    }
    /// The parameter `vmid` (format pve-vmid, 100 - 999999999).
    pub fn vmid() -> P {
        P::int("vmid").fmt(f::VMID).range(100, 999_999_999)
    }
    /// The parameter `storage` (format pve-storage-id).
    pub fn storage() -> P {
        P::str("storage").fmt(f::STORAGE_ID)
    }

    /// Marks the parameter optional.
    pub fn opt(mut self) -> P {
        self.optional = true;
        self
    }
    pub fn min(mut self, v: i64) -> P {
        self.minimum = Some(v as f64);
        self
    }
    pub fn max(mut self, v: i64) -> P {
        self.maximum = Some(v as f64);
        self
    }
    pub fn range(self, lo: i64, hi: i64) -> P {
        self.min(lo).max(hi)
    }
    pub fn minf(mut self, v: f64) -> P {
        self.minimum = Some(v);
        self
    }
    pub fn maxf(mut self, v: f64) -> P {
        self.maximum = Some(v);
        self
    }
    pub fn en(mut self, values: &'static [&'static str]) -> P {
        self.enumeration = Some(values);
        self
    }
    pub fn pattern(mut self, re: &'static str) -> P {
        self.pattern = Some(re);
        self
    }
    pub fn fmt(mut self, format: Format) -> P {
        self.format = Some(format);
        self
    }
    /// A property-string format.
    pub fn prop(self, format: &Arc<PropFormat>) -> P {
        self.fmt(Format::Prop(format.clone()))
    }
    pub fn max_len(mut self, n: usize) -> P {
        self.max_length = Some(n);
        self
    }
    pub fn min_len(mut self, n: usize) -> P {
        self.min_length = Some(n);
        self
    }
    pub fn requires(mut self, other: &'static str) -> P {
        self.requires = Some(other);
        self
    }
    /// Declares the family `name0..=name<hi>` (PVE's `name[n]`).
    pub fn indexed(mut self, lo: u32, hi: u32) -> P {
        self.indexed = Some((lo, hi));
        self.optional = true;
        self
    }
    /// Property strings: the key used for a bare value.
    pub fn default_key(mut self) -> P {
        self.default_key = true;
        self
    }
}

/// A declaration with its compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub spec: P,
    pub regex: Option<Regex>,
}

impl Rule {
    pub(crate) fn new(spec: P) -> Rule {
        let regex = spec.pattern.map(|p| {
            Regex::new(&format!("^(?:{})$", perl_to_rust_regex(p)))
                .unwrap_or_else(|e| panic!("bad pattern for {}: {e}", spec.name))
        });
        Rule { spec, regex }
    }
}

/// Translates the Perl-isms of PVE's schema regexes (`(?^:`, `{,n}`) to the `regex` crate.
fn perl_to_rust_regex(p: &str) -> String {
    p.replace("(?^:", "(?:").replace("{,", "{0,")
}

/// A compiled parameter list of one endpoint.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    rules: Vec<Rule>,
    by_name: HashMap<String, usize>,
}

impl Schema {
    /// Compiles declarations (expanding `indexed` families).
    pub fn new(params: Vec<P>) -> Schema {
        let mut s = Schema::default();
        for p in params {
            let idx = s.rules.len();
            match p.indexed {
                Some((lo, hi)) => {
                    for i in lo..=hi {
                        s.by_name.insert(format!("{}{}", p.name, i), idx);
                    }
                }
                None => {
                    s.by_name.insert(p.name.to_string(), idx);
                }
            }
            s.rules.push(Rule::new(p));
        }
        s
    }

    /// Whether `name` is declared (families included).
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Checks merged raw parameters; on success every value is normalised to a string
    /// (booleans `1`/`0`, numbers as written).
    pub fn validate(&self, raw: HashMap<String, RawValue>) -> PveResult<Params> {
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        let mut out = Params::default();
        for rule in &self.rules {
            if rule.spec.indexed.is_none() && !rule.spec.optional && !raw.contains_key(rule.spec.name) {
                add_error(&mut errors, rule.spec.name, "property is missing and it is not optional");
            }
        }
        for (name, value) in raw {
            let Some(&idx) = self.by_name.get(&name) else {
                add_error(
                    &mut errors,
                    &name,
                    "property is not defined in schema and the schema does not allow additional properties",
                );
                continue;
            };
            let rule = &self.rules[idx];
            if let RawValue::Json(Value::Null) = value {
                if !rule.spec.optional {
                    add_error(&mut errors, &name, "property is missing and it is not optional");
                }
                continue;
            }
            match check_raw(&name, rule, &value, &mut errors) {
                Some(Checked::One(s)) => {
                    out.values.insert(name, s);
                }
                Some(Checked::Many(v)) => {
                    out.values.insert(name.clone(), v.join("\0"));
                    out.arrays.insert(name, v);
                }
                None => {}
            }
        }
        for rule in &self.rules {
            if let Some(req) = rule.spec.requires {
                let present: Vec<&String> = match rule.spec.indexed {
                    None => out.values.keys().filter(|k| k.as_str() == rule.spec.name).collect(),
                    Some(_) => Vec::new(),
                };
                for name in present {
                    if !out.values.contains_key(req) && !errors.contains_key(req) {
                        errors.insert(req.to_string(), format!("missing property required by '{name}'"));
                    }
                }
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(PveError::Param(errors)) }
    }
}

/// A raw parameter value as received: a string (form, query, path) or a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Str(String),
    Json(Value),
}

impl RawValue {
    /// The value as PVE's Perl code would stringify it, for comparisons.
    pub fn as_string(&self) -> String {
        match self {
            RawValue::Str(s) => s.clone(),
            RawValue::Json(Value::String(s)) => s.clone(),
            RawValue::Json(Value::Bool(b)) => if *b { "1" } else { "0" }.to_string(),
            RawValue::Json(v) => v.to_string(),
        }
    }
}

enum Checked {
    One(String),
    Many(Vec<String>),
}

/// PVE's `add_error`: several messages for one path are joined by a literal `\n` (two characters).
pub(crate) fn add_error(errors: &mut BTreeMap<String, String>, path: &str, msg: &str) {
    let path = if path.is_empty() { "_root" } else { path };
    match errors.get_mut(path) {
        Some(existing) => {
            existing.push_str("\\n");
            existing.push_str(msg);
        }
        None => {
            errors.insert(path.to_string(), msg.to_string());
        }
    }
}

fn check_raw(path: &str, rule: &Rule, value: &RawValue, errors: &mut BTreeMap<String, String>) -> Option<Checked> {
    let ty = rule.spec.ty;
    let tname = ty.name();
    let scalar: String = match value {
        RawValue::Str(s) => s.clone(),
        RawValue::Json(v) => match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => {
                if ty != Ty::Boolean && ty != Ty::String {
                    add_error(errors, path, &format!("type check ('{tname}') failed - got JSON::PP::Boolean"));
                    return None;
                }
                if *b { "1" } else { "0" }.to_string()
            }
            Value::Array(items) => {
                if ty != Ty::Array {
                    add_error(errors, path, &format!("type check ('{tname}') failed - got ARRAY"));
                    return None;
                }
                let items: Vec<String> = items.iter().map(|i| RawValue::Json(i.clone()).as_string()).collect();
                return Some(Checked::Many(items));
            }
            Value::Object(_) => {
                add_error(errors, path, &format!("type check ('{tname}') failed - got HASH"));
                return None;
            }
            Value::Null => return None,
        },
    };
    if ty == Ty::Array {
        return Some(Checked::Many(scalar.split('\0').map(str::to_string).collect()));
    }
    if check_scalar(path, rule, &scalar, errors) { Some(Checked::One(scalar)) } else { None }
}

/// `check_prop` for a defined scalar: type, format, pattern, lengths, minimum/maximum, enum.
/// Returns whether the value passed.
pub(crate) fn check_scalar(path: &str, rule: &Rule, value: &str, errors: &mut BTreeMap<String, String>) -> bool {
    let spec = &rule.spec;
    let tname = spec.ty.name();
    let type_ok = match spec.ty {
        Ty::String | Ty::Array => true,
        Ty::Boolean => value == "1" || value == "0",
        Ty::Integer => is_integer(value),
        Ty::Number => is_number(value),
    };
    if !type_ok {
        add_error(errors, path, &format!("type check ('{tname}') failed - got '{value}'"));
        return false;
    }
    if let Some(format) = &spec.format
        && let Err(msg) = check_format(format, value, path)
    {
        add_error(errors, path, &format!("invalid format - {msg}"));
        return false;
    }
    if let Some(re) = &rule.regex
        && !re.is_match(value)
    {
        add_error(errors, path, "value does not match the regex pattern");
        return false;
    }
    let len = value.chars().count();
    if let Some(max) = spec.max_length
        && len > max
    {
        add_error(errors, path, &format!("value may only be {max} characters long"));
        return false;
    }
    if let Some(min) = spec.min_length
        && len < min
    {
        add_error(errors, path, &format!("value must be at least {min} characters long"));
        return false;
    }
    if is_number(value) {
        let n: f64 = value.parse().unwrap_or(0.0);
        if let Some(max) = spec.maximum
            && n > max
        {
            add_error(errors, path, &format!("value must have a maximum value of {}", perl_num(max)));
            return false;
        }
        if let Some(min) = spec.minimum
            && n < min
        {
            add_error(errors, path, &format!("value must have a minimum value of {}", perl_num(min)));
            return false;
        }
    }
    if let Some(values) = spec.enumeration
        && !values.contains(&value)
    {
        add_error(
            errors,
            path,
            &format!("value '{value}' does not have a value in the enumeration '{}'", values.join(", ")),
        );
        return false;
    }
    true
}

/// `check_format`; the error is the `die` text including its trailing newline(s).
pub(crate) fn check_format(format: &Format, value: &str, path: &str) -> Result<(), String> {
    match format {
        Format::Check(check) => check(value).map_err(|m| format!("{m}\n")),
        Format::List(check) => {
            for item in split_list(value) {
                check(item).map_err(|m| format!("{m}\n"))?;
            }
            Ok(())
        }
        Format::Prop(pf) => pf.parse_at(value, path).map(|_| ()),
    }
}

fn perl_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// Perl `is_integer`: `^[+-]?\d+$`.
pub fn is_integer(v: &str) -> bool {
    let d = v.strip_prefix(['+', '-']).unwrap_or(v);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// Perl `is_number`: `^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`.
pub fn is_number(v: &str) -> bool {
    let s = v.strip_prefix(['+', '-']).unwrap_or(v);
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if let Some(e) = exp {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let (int, frac) = match mant.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mant, None),
    };
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
    }
}

/// Validated parameters of one request, with typed accessors.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: HashMap<String, String>,
    arrays: HashMap<String, Vec<String>>,
}

impl Params {
    /// Builds parameters directly (for internal calls and tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Params {
        Params {
            values: pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            arrays: HashMap::new(),
        }
    }

    fn missing(name: &str) -> PveError {
        PveError::param(name, "property is missing and it is not optional")
    }

    /// Whether the parameter was given.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    /// A required string.
    pub fn str(&self, name: &str) -> PveResult<&str> {
        self.opt_str(name).ok_or_else(|| Self::missing(name))
    }
    /// An optional string.
    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    /// A required integer as u32.
    pub fn u32(&self, name: &str) -> PveResult<u32> {
        self.opt_u32(name).ok_or_else(|| Self::missing(name))
    }
    /// An optional integer as u32.
    pub fn opt_u32(&self, name: &str) -> Option<u32> {
        self.opt_i64(name).and_then(|v| u32::try_from(v).ok())
    }
    /// A required integer as u64.
    pub fn u64(&self, name: &str) -> PveResult<u64> {
        self.opt_u64(name).ok_or_else(|| Self::missing(name))
    }
    /// An optional integer as u64.
    pub fn opt_u64(&self, name: &str) -> Option<u64> {
        self.opt_i64(name).and_then(|v| u64::try_from(v).ok())
    }
    /// A required integer.
    pub fn i64(&self, name: &str) -> PveResult<i64> {
        self.opt_i64(name).ok_or_else(|| Self::missing(name))
    }
    /// An optional integer.
    pub fn opt_i64(&self, name: &str) -> Option<i64> {
        self.values.get(name).and_then(|v| v.strip_prefix('+').unwrap_or(v).parse().ok())
    }
    /// An optional number.
    pub fn opt_f64(&self, name: &str) -> Option<f64> {
        self.values.get(name).and_then(|v| v.parse().ok())
    }
    /// A boolean, false when absent.
    pub fn bool(&self, name: &str) -> bool {
        self.opt_bool(name).unwrap_or(false)
    }
    /// A boolean with a default when absent.
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        self.opt_bool(name).unwrap_or(default)
    }
    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        self.values.get(name).map(|v| v == "1")
    }
    /// The node path parameter.
    pub fn node(&self) -> PveResult<&str> {
        self.str("node")
    }
    /// The vmid parameter.
    pub fn vmid(&self) -> PveResult<u32> {
        self.u32("vmid")
    }
    /// Items of an array parameter, or of a `-list` string (split like PVE).
    pub fn list(&self, name: &str) -> Vec<&str> {
        if let Some(items) = self.arrays.get(name) {
            return items.iter().map(String::as_str).collect();
        }
        self.values.get(name).map(|v| split_list(v)).unwrap_or_default()
    }
    /// Members of a `name[n]` family that were given, sorted by index.
    pub fn indexed(&self, prefix: &str) -> Vec<(u32, &str)> {
        let mut out: Vec<(u32, &str)> = self
            .values
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(prefix)?;
                if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((rest.parse().ok()?, v.as_str()))
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out
    }
    /// All given parameters (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Adds or replaces a value (handlers filling in defaults).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_string(), value.into());
    }
    /// Removes a value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> HashMap<String, RawValue> {
        pairs.iter().map(|(k, v)| (k.to_string(), RawValue::Str(v.to_string()))).collect()
    }

    fn schema() -> Schema {
        Schema::new(vec![
            P::node(),
            P::vmid(),
            P::str("name").opt().fmt(f::DNS_NAME),
            P::bool("full").opt(),
            P::int("cores").opt().range(1, 8),
            P::str("mode").opt().en(&["snapshot", "suspend", "stop"]),
            P::str("size").opt().pattern(r"\+?\d+(\.\d+)?[KMGT]?"),
            P::str("net").indexed(0, 31),
            P::str("notes").opt().max_len(4).requires("mode"),
        ])
    }

    fn err_of(r: PveResult<Params>) -> BTreeMap<String, String> {
        match r {
            Err(PveError::Param(e)) => e,
            other => panic!("expected a param error, got {other:?}"),
        }
    }

    #[test]
    fn valid_parameters_pass_with_typed_access() {
        let p = schema()
            .validate(raw(&[("node", "pve1"), ("vmid", "100"), ("full", "1"), ("net0", "virtio"), ("net3", "e1000")]))
            .unwrap();
        assert_eq!(p.vmid().unwrap(), 100);
        assert!(p.bool("full"));
        assert_eq!(p.indexed("net"), vec![(0, "virtio"), (3, "e1000")]);
    }

    #[test]
    fn errors_use_pve_texts() {
        let e = err_of(schema().validate(raw(&[
            ("node", "pve1"),
            ("vmid", "abc"),
            ("full", "true"),
            ("cores", "9"),
            ("mode", "x"),
            ("size", "1X"),
            ("net32", "virtio"),
            ("bogus", "1"),
        ])));
        assert_eq!(e["vmid"], "type check ('integer') failed - got 'abc'");
        assert_eq!(e["full"], "type check ('boolean') failed - got 'true'");
        assert_eq!(e["cores"], "value must have a maximum value of 8");
        assert_eq!(e["mode"], "value 'x' does not have a value in the enumeration 'snapshot, suspend, stop'");
        assert_eq!(e["size"], "value does not match the regex pattern");
        assert!(e["net32"].starts_with("property is not defined in schema"));
        assert!(e["bogus"].starts_with("property is not defined in schema"));
        let e = err_of(schema().validate(raw(&[("vmid", "99"), ("notes", "abcdef")])));
        assert_eq!(e["node"], "property is missing and it is not optional");
        assert_eq!(e["vmid"], "invalid format - value does not look like a valid VM ID\n");
        assert_eq!(e["notes"], "value may only be 4 characters long");
        let e = err_of(schema().validate(raw(&[("node", "pve1"), ("vmid", "100"), ("notes", "ab")])));
        assert_eq!(e["mode"], "missing property required by 'notes'");
    }

    #[test]
    fn json_values_are_typed() {
        let mut r = HashMap::new();
        r.insert("node".to_string(), RawValue::Json(Value::String("pve1".into())));
        r.insert("vmid".to_string(), RawValue::Json(serde_json::json!(100)));
        r.insert("full".to_string(), RawValue::Json(Value::Bool(true)));
        let p = schema().validate(r).unwrap();
        assert!(p.bool("full"));
        assert_eq!(p.vmid().unwrap(), 100);
        let mut r = HashMap::new();
        r.insert("node".to_string(), RawValue::Json(Value::String("pve1".into())));
        r.insert("vmid".to_string(), RawValue::Json(Value::Bool(true)));
        let e = err_of(schema().validate(r));
        assert_eq!(e["vmid"], "type check ('integer') failed - got JSON::PP::Boolean");
    }

    #[test]
    fn numbers_follow_perl_rules() {
        for ok in ["1", "+1", "-1.5", "1.", ".5", "1e3"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in ["", ".", "1..2", "e3", "0x10", "1e"] {
            assert!(!is_number(bad), "{bad}");
        }
        assert!(is_integer("+42") && !is_integer("4.2"));
    }
}
