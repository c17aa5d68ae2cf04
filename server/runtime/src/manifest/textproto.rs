//! Protocol Buffers text format (what Triton's `config.pbtxt` is written
//! in), read into a generic tree: a message is its fields in order, each
//! field name holding the list of values it was given (a repeated field
//! written several times, or as a `[ ... ]` list, gives several values).
//!
//! No schema is involved: what a field means, whether it may repeat and
//! what type its values must have is for the reader of the tree
//! ([`super::config`]) to decide, with the field's path in its messages.
//!
//! Accepted syntax, as protobuf's own text parser accepts it:
//! - `# comment` to the end of the line;
//! - `name: scalar`, `name { ... }`, `name: { ... }`, `name < ... >`;
//! - lists `name: [ 1, 2 ]` and `name [ { ... }, { ... } ]` (the colon is
//!   optional before a message or a list of messages), empty `[]`;
//! - fields separated by whitespace, `,` or `;`;
//! - scalars: numbers (decimal, `0x` hexadecimal, leading-zero octal,
//!   floats with `.`/exponent and an optional `f` suffix, a leading `-`),
//!   identifiers (enum values, `true`/`false`, `inf`, `nan`), strings in
//!   single or double quotes with C escapes (`\n`, `\t`, `\\`, `\'`, `\"`,
//!   octal `\123`, `\x7f`, `\u00e9`, `\U0001F600`), adjacent strings
//!   concatenated (`"a" "b"`).
//!
//! Every error names the line and column (1-based) where it was found.

use std::fmt;

/// Where something is in the text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.col)
    }
}

/// A syntax error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

/// One value of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number as written (sign included, `f` suffix removed), to be read
    /// as the field's type requires: see [`Value::as_i64`] and friends.
    Number(String),
    /// A string literal, escapes resolved (adjacent literals joined).
    Str(String),
    /// An identifier: an enum value, `true`, `false`, `inf`, `nan`, or a
    /// negated one (`-inf`).
    Ident(String),
    Message(Message),
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub value: Value,
    pub pos: Pos,
}

/// A message: field name -> the values it was given, in the order the
/// names first appear.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    fields: Vec<(String, Vec<Located>)>,
}

impl Message {
    /// The values of field `name` (empty when absent).
    pub fn get(&self, name: &str) -> &[Located] {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// Every field: name and values, in order of first appearance.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[Located])> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn push(&mut self, name: String, value: Located) {
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, list)) => list.push(value),
            None => self.fields.push((name, vec![value])),
        }
    }

    /// Marks a field as present with no values (`name: []`), so that its
    /// presence can still be seen.
    fn touch(&mut self, name: String) {
        if !self.fields.iter().any(|(n, _)| *n == name) {
            self.fields.push((name, Vec::new()));
        }
    }
}

impl Value {
    /// An integer field (`int32`, `int64`): decimal, hexadecimal or octal.
    pub fn as_i64(&self) -> Result<i64, String> {
        let Value::Number(text) = self else {
            return Err(format!("expected an integer, got {}", self.describe()));
        };
        parse_int(text).ok_or_else(|| format!("expected an integer, got {text}"))
    }

    /// An unsigned integer field (`uint32`, `uint64`).
    pub fn as_u64(&self) -> Result<u64, String> {
        let Value::Number(text) = self else {
            return Err(format!("expected an integer, got {}", self.describe()));
        };
        match parse_magnitude(text) {
            Some((false, m)) => Ok(m),
            Some((true, 0)) => Ok(0),
            Some((true, _)) => Err(format!("expected an integer >= 0, got {text}")),
            None => Err(format!("expected an integer, got {text}")),
        }
    }

    /// A floating-point field: any number, or `inf`/`-inf`/`nan`.
    pub fn as_f64(&self) -> Result<f64, String> {
        match self {
            Value::Number(text) => parse_int(text)
                .map(|i| i as f64)
                .or_else(|| text.parse::<f64>().ok())
                .ok_or_else(|| format!("expected a number, got {text}")),
            Value::Ident(id) => match id.to_ascii_lowercase().as_str() {
                "inf" | "infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                "nan" | "-nan" => Ok(f64::NAN),
                _ => Err(format!("expected a number, got {id}")),
            },
            other => Err(format!("expected a number, got {}", other.describe())),
        }
    }

    /// A `bool` field: `true`/`false` (also `True`, `t`, `1`, as protobuf
    /// accepts).
    pub fn as_bool(&self) -> Result<bool, String> {
        match self {
            Value::Ident(id) => match id.as_str() {
                "true" | "True" | "t" => Ok(true),
                "false" | "False" | "f" => Ok(false),
                _ => Err(format!("expected true or false, got {id}")),
            },
            Value::Number(n) if n == "1" => Ok(true),
            Value::Number(n) if n == "0" => Ok(false),
            other => Err(format!("expected true or false, got {}", other.describe())),
        }
    }

    /// A `string` field.
    pub fn as_str(&self) -> Result<&str, String> {
        match self {
            Value::Str(s) => Ok(s),
            other => Err(format!(
                "expected a quoted string, got {}",
                other.describe()
            )),
        }
    }

    /// An enum field: its value's name (a number is not accepted: configs
    /// name their enum values).
    pub fn as_enum(&self) -> Result<&str, String> {
        match self {
            Value::Ident(id) => Ok(id),
            other => Err(format!(
                "expected an enum value name, got {}",
                other.describe()
            )),
        }
    }

    /// A message field.
    pub fn as_message(&self) -> Result<&Message, String> {
        match self {
            Value::Message(m) => Ok(m),
            other => Err(format!(
                "expected a message {{ ... }}, got {}",
                other.describe()
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Value::Number(n) => format!("the number {n}"),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Ident(i) => format!("the identifier {i}"),
            Value::Message(_) => "a message { ... }".into(),
        }
    }
}

/// An integer token's sign and magnitude (decimal, `0x` hex, `0` octal).
fn parse_magnitude(text: &str) -> Option<(bool, u64)> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let radix_digits = |d: &str, radix: u32| {
        (!d.is_empty() && d.chars().all(|c| c.is_digit(radix)))
            .then(|| u64::from_str_radix(d, radix).ok())
            .flatten()
    };
    let magnitude = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        radix_digits(hex, 16)?
    } else if digits.len() > 1 && digits.starts_with('0') {
        radix_digits(&digits[1..], 8)?
    } else {
        radix_digits(digits, 10)?
    };
    Some((neg, magnitude))
}

fn parse_int(text: &str) -> Option<i64> {
    match parse_magnitude(text)? {
        (true, m) => 0i64.checked_sub_unsigned(m),
        (false, m) => i64::try_from(m).ok(),
    }
}

/// Parses a whole text-format message.
pub fn parse(text: &str) -> Result<Message, ParseError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        i: 0,
        pos: Pos { line: 1, col: 1 },
    };
    let msg = p.message(None)?;
    p.skip_space();
    match p.peek() {
        None => Ok(msg),
        Some(c) => Err(p.error_here(format!("unexpected {}", show(c)))),
    }
}

struct Parser {
    chars: Vec<char>,
    i: usize,
    pos: Pos,
}

fn show(c: char) -> String {
    match c {
        '\n' => "end of line".into(),
        c if c.is_control() => format!("character U+{:04X}", c as u32),
        c => format!("'{c}'"),
    }
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.col = 1;
        } else {
            self.pos.col += 1;
        }
        Some(c)
    }

    fn error_here(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            pos: self.pos,
            message: message.into(),
        }
    }

    fn error_at(pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError {
            pos,
            message: message.into(),
        }
    }

    /// Whitespace and `#` comments.
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '#' {
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            _ => return None,
        }
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        Some(s)
    }

    /// Fields until `close` (or the end of the text when `None`).
    fn message(&mut self, close: Option<char>) -> Result<Message, ParseError> {
        let mut msg = Message::default();
        loop {
            self.skip_space();
            match (self.peek(), close) {
                (None, None) => return Ok(msg),
                (None, Some(c)) => {
                    return Err(self.error_here(format!(
                        "expected '{c}' to close the message, got the end of the text"
                    )))
                }
                (Some(c), Some(close)) if c == close => {
                    self.bump();
                    return Ok(msg);
                }
                _ => {}
            }
            let at = self.pos;
            let Some(name) = self.ident() else {
                let c = self.peek().expect("not at the end");
                let hint = if c == '[' {
                    " (extension and Any fields are not supported)"
                } else {
                    ""
                };
                return Err(
                    self.error_here(format!("expected a field name, got {}{hint}", show(c)))
                );
            };
            self.field(&mut msg, name, at)?;
            // Optional separator.
            if !self.eat(',') {
                self.eat(';');
            }
        }
    }

    /// The rest of a field after its name.
    fn field(&mut self, msg: &mut Message, name: String, at: Pos) -> Result<(), ParseError> {
        let colon = self.eat(':');
        self.skip_space();
        match self.peek() {
            Some('{') | Some('<') => {
                let pos = self.pos;
                let m = self.message_value()?;
                msg.push(
                    name,
                    Located {
                        value: Value::Message(m),
                        pos,
                    },
                );
            }
            Some('[') => {
                self.bump();
                msg.touch(name.clone());
                if self.eat(']') {
                    return Ok(());
                }
                loop {
                    self.skip_space();
                    let pos = self.pos;
                    let value = match self.peek() {
                        Some('{') | Some('<') => Value::Message(self.message_value()?),
                        _ if !colon => {
                            return Err(self.error_here(format!(
                                "field {name:?}: a list of scalars needs a ':' after the field name (`{name}: [ ... ]`)"
                            )))
                        }
                        _ => self.scalar(&name)?,
                    };
                    msg.push(name.clone(), Located { value, pos });
                    if self.eat(']') {
                        return Ok(());
                    }
                    self.skip_space();
                    if !self.eat(',') {
                        return Err(match self.peek() {
                            Some(c) => self.error_here(format!(
                                "field {name:?}: expected ',' or ']' in the list, got {}",
                                show(c)
                            )),
                            None => self.error_here(format!(
                                "field {name:?}: expected ']' to close the list, got the end of the text"
                            )),
                        });
                    }
                }
            }
            _ if !colon => {
                return Err(match self.peek() {
                    Some(c) => self.error_here(format!(
                        "expected ':' or '{{' after field name {name:?}, got {}",
                        show(c)
                    )),
                    None => Parser::error_at(
                        at,
                        format!("field {name:?} has no value (the text ends after its name)"),
                    ),
                })
            }
            _ => {
                let pos = self.pos;
                let value = self.scalar(&name)?;
                msg.push(name, Located { value, pos });
            }
        }
        Ok(())
    }

    fn message_value(&mut self) -> Result<Message, ParseError> {
        let close = match self.bump() {
            Some('{') => '}',
            Some('<') => '>',
            _ => unreachable!("called on '{{' or '<'"),
        };
        self.message(Some(close))
    }

    fn scalar(&mut self, field: &str) -> Result<Value, ParseError> {
        self.skip_space();
        let at = self.pos;
        match self.peek() {
            Some('"') | Some('\'') => {
                let mut bytes = self.string()?;
                // Adjacent literals are one string.
                loop {
                    self.skip_space();
                    match self.peek() {
                        Some('"') | Some('\'') => bytes.extend(self.string()?),
                        _ => break,
                    }
                }
                String::from_utf8(bytes).map(Value::Str).map_err(|e| {
                    Parser::error_at(
                        at,
                        format!(
                            "field {field:?}: the string is not valid UTF-8 (byte {})",
                            e.utf8_error().valid_up_to()
                        ),
                    )
                })
            }
            Some('-') => {
                self.bump();
                self.skip_space();
                match self.peek() {
                    Some(c) if c.is_ascii_digit() || c == '.' => {
                        Ok(Value::Number(format!("-{}", self.number(field)?)))
                    }
                    Some(c) if c.is_ascii_alphabetic() => {
                        let id = self.ident().expect("starts with a letter");
                        match id.to_ascii_lowercase().as_str() {
                            "inf" | "infinity" | "nan" => Ok(Value::Ident(format!("-{id}"))),
                            _ => Err(Parser::error_at(
                                at,
                                format!("field {field:?}: '-' must be followed by a number, got {id}"),
                            )),
                        }
                    }
                    _ => Err(self.error_here(format!(
                        "field {field:?}: '-' must be followed by a number"
                    ))),
                }
            }
            Some(c) if c.is_ascii_digit() || c == '.' => Ok(Value::Number(self.number(field)?)),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                Ok(Value::Ident(self.ident().expect("starts with a letter")))
            }
            Some(c) => Err(self.error_here(format!(
                "field {field:?}: expected a value (number, string, identifier, {{ ... }} or [ ... ]), got {}",
                show(c)
            ))),
            None => Err(self.error_here(format!(
                "field {field:?}: expected a value, got the end of the text"
            ))),
        }
    }

    /// An unsigned number token; checked for shape, converted later.
    fn number(&mut self, field: &str) -> Result<String, ParseError> {
        let at = self.pos;
        let mut s = String::new();
        let hex = self.peek() == Some('0') && matches!(self.peek_at(1), Some('x') | Some('X'));
        if hex {
            s.push(self.bump().expect("peeked"));
            s.push(self.bump().expect("peeked"));
            while let Some(c) = self.peek().filter(char::is_ascii_hexdigit) {
                s.push(c);
                self.bump();
            }
            if s.len() == 2 {
                return Err(Parser::error_at(
                    at,
                    format!("field {field:?}: '0x' must be followed by hexadecimal digits"),
                ));
            }
        } else {
            let mut float = false;
            while let Some(c) = self.peek() {
                let exponent_sign =
                    (c == '-' || c == '+') && matches!(s.chars().last(), Some('e') | Some('E'));
                if c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || exponent_sign {
                    float |= !c.is_ascii_digit();
                    s.push(c);
                    self.bump();
                } else {
                    break;
                }
            }
            if matches!(self.peek(), Some('f') | Some('F')) {
                self.bump();
                float = true;
            }
            let valid = if float {
                s.parse::<f64>().is_ok()
            } else {
                parse_magnitude(&s).is_some()
            };
            if !valid {
                return Err(Parser::error_at(
                    at,
                    format!("field {field:?}: {s:?} is not a number"),
                ));
            }
        }
        // A number runs straight into a name: `12abc`.
        if let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            return Err(self.error_here(format!(
                "field {field:?}: unexpected {} right after the number {s}",
                show(c)
            )));
        }
        Ok(s)
    }

    /// One quoted literal, as bytes (escapes may produce any byte).
    fn string(&mut self) -> Result<Vec<u8>, ParseError> {
        let start = self.pos;
        let quote = self.bump().expect("called on a quote");
        let mut out = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(Parser::error_at(
                    start,
                    "unterminated string: the text ends before its closing quote",
                ));
            };
            match c {
                c if c == quote => return Ok(out),
                '\n' => {
                    return Err(Parser::error_at(
                        start,
                        "unterminated string: a line ends before its closing quote",
                    ))
                }
                '\\' => {
                    let at = self.pos;
                    let e = self.bump().ok_or_else(|| {
                        Parser::error_at(start, "unterminated string: it ends in a backslash")
                    })?;
                    match e {
                        'n' => out.push(b'\n'),
                        't' => out.push(b'\t'),
                        'r' => out.push(b'\r'),
                        'a' => out.push(0x07),
                        'b' => out.push(0x08),
                        'f' => out.push(0x0c),
                        'v' => out.push(0x0b),
                        '\\' | '\'' | '"' | '?' => out.push(e as u8),
                        '0'..='7' => {
                            let mut v = e.to_digit(8).expect("octal digit");
                            for _ in 0..2 {
                                match self.peek().and_then(|c| c.to_digit(8)) {
                                    Some(d) => {
                                        v = v * 8 + d;
                                        self.bump();
                                    }
                                    None => break,
                                }
                            }
                            let byte = u8::try_from(v).map_err(|_| {
                                Parser::error_at(at, format!("octal escape \\{v:o} is above \\377"))
                            })?;
                            out.push(byte);
                        }
                        'x' | 'X' => {
                            let mut v = 0u32;
                            let mut n = 0;
                            while n < 2 {
                                match self.peek().and_then(|c| c.to_digit(16)) {
                                    Some(d) => {
                                        v = v * 16 + d;
                                        self.bump();
                                        n += 1;
                                    }
                                    None => break,
                                }
                            }
                            if n == 0 {
                                return Err(Parser::error_at(
                                    at,
                                    "\\x must be followed by hexadecimal digits",
                                ));
                            }
                            out.push(v as u8);
                        }
                        'u' | 'U' => {
                            let len = if e == 'u' { 4 } else { 8 };
                            let mut v = 0u32;
                            for _ in 0..len {
                                let d = self.peek().and_then(|c| c.to_digit(16)).ok_or_else(|| {
                                    Parser::error_at(
                                        at,
                                        format!("\\{e} must be followed by {len} hexadecimal digits"),
                                    )
                                })?;
                                v = v * 16 + d;
                                self.bump();
                            }
                            let ch = char::from_u32(v).ok_or_else(|| {
                                Parser::error_at(
                                    at,
                                    format!("\\{e}{v:0len$X} is not a Unicode character"),
                                )
                            })?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => {
                            return Err(Parser::error_at(
                                at,
                                format!("unknown escape \\{other} in a string"),
                            ))
                        }
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one<'a>(m: &'a Message, name: &str) -> &'a Value {
        let v = m.get(name);
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        &v[0].value
    }

    #[test]
    fn scalars_messages_and_lists() {
        let m = parse(
            r#"
            # a Triton configuration
            name: "mlp"   # trailing comment
            platform: 'onnxruntime_onnx'
            max_batch_size: 8
            input [
              {
                name: "x"
                data_type: TYPE_FP32
                dims: [ -1, 64 ]
              },
              { name: "y", data_type: TYPE_INT64, dims: 3; dims: 0x10 }
            ]
            output { name: "p" dims [ ] }
            dynamic_batching: { preferred_batch_size: [4, 8] max_queue_delay_microseconds: 100 }
            instance_group < count: 2 kind: KIND_CPU >
            version_policy: { all { } }
            "#,
        )
        .unwrap();
        assert_eq!(one(&m, "name").as_str().unwrap(), "mlp");
        assert_eq!(one(&m, "platform").as_str().unwrap(), "onnxruntime_onnx");
        assert_eq!(one(&m, "max_batch_size").as_i64().unwrap(), 8);
        let inputs = m.get("input");
        assert_eq!(inputs.len(), 2);
        let x = inputs[0].value.as_message().unwrap();
        assert_eq!(one(x, "data_type").as_enum().unwrap(), "TYPE_FP32");
        let dims: Vec<i64> = x
            .get("dims")
            .iter()
            .map(|d| d.value.as_i64().unwrap())
            .collect();
        assert_eq!(dims, [-1, 64]);
        let y = inputs[1].value.as_message().unwrap();
        let dims: Vec<i64> = y
            .get("dims")
            .iter()
            .map(|d| d.value.as_i64().unwrap())
            .collect();
        assert_eq!(dims, [3, 16]);
        let out = one(&m, "output").as_message().unwrap();
        // `dims [ ]` is present and empty.
        assert!(out.fields().any(|(n, v)| n == "dims" && v.is_empty()));
        let db = one(&m, "dynamic_batching").as_message().unwrap();
        assert_eq!(db.get("preferred_batch_size").len(), 2);
        assert_eq!(
            one(db, "max_queue_delay_microseconds").as_u64().unwrap(),
            100
        );
        let ig = one(&m, "instance_group").as_message().unwrap();
        assert_eq!(one(ig, "count").as_i64().unwrap(), 2);
        let vp = one(&m, "version_policy").as_message().unwrap();
        assert!(one(vp, "all").as_message().unwrap().is_empty());
        // Field order is the order of first appearance.
        let names: Vec<&str> = m.fields().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "name",
                "platform",
                "max_batch_size",
                "input",
                "output",
                "dynamic_batching",
                "instance_group",
                "version_policy"
            ]
        );
        // Positions point at the value.
        assert_eq!(m.get("max_batch_size")[0].pos, Pos { line: 5, col: 29 });
    }

    #[test]
    fn repeated_fields_accumulate() {
        let m = parse("dims: 1 dims: 2, dims: [3, 4]; dims: 5").unwrap();
        let v: Vec<i64> = m
            .get("dims")
            .iter()
            .map(|d| d.value.as_i64().unwrap())
            .collect();
        assert_eq!(v, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn numbers() {
        let m = parse(
            "a: -7 b: 0x1F c: 017 d: 1.5 e: -2.5e-3 f: 3f g: .5 h: -inf i: nan j: 1e3 k: -0x10",
        )
        .unwrap();
        assert_eq!(one(&m, "a").as_i64().unwrap(), -7);
        assert_eq!(one(&m, "b").as_i64().unwrap(), 31);
        assert_eq!(one(&m, "c").as_i64().unwrap(), 15);
        assert_eq!(one(&m, "d").as_f64().unwrap(), 1.5);
        assert_eq!(one(&m, "e").as_f64().unwrap(), -0.0025);
        assert_eq!(one(&m, "f").as_f64().unwrap(), 3.0);
        assert_eq!(one(&m, "g").as_f64().unwrap(), 0.5);
        assert_eq!(one(&m, "h").as_f64().unwrap(), f64::NEG_INFINITY);
        assert!(one(&m, "i").as_f64().unwrap().is_nan());
        assert_eq!(one(&m, "j").as_f64().unwrap(), 1000.0);
        assert_eq!(one(&m, "k").as_i64().unwrap(), -16);
        // An integer field refuses a float, naming it.
        assert!(one(&m, "d")
            .as_i64()
            .unwrap_err()
            .contains("expected an integer, got 1.5"));
        assert!(one(&m, "a")
            .as_u64()
            .unwrap_err()
            .contains("expected an integer >= 0, got -7"));
        assert_eq!(
            parse("a: 9223372036854775807").unwrap().get("a")[0]
                .value
                .as_i64()
                .unwrap(),
            i64::MAX
        );
        assert_eq!(
            parse("a: -9223372036854775808").unwrap().get("a")[0]
                .value
                .as_i64()
                .unwrap(),
            i64::MIN
        );
        let big = parse("a: 18446744073709551615").unwrap();
        assert!(big.get("a")[0].value.as_i64().is_err());
        assert_eq!(big.get("a")[0].value.as_u64().unwrap(), u64::MAX);
        let e = err("a: 18446744073709551616");
        assert!(e.message.contains("is not a number"), "{e}");
    }

    #[test]
    fn strings_and_escapes() {
        let m = parse(
            r#"a: "tab\there" b: 'it\'s' c: "q\"q" d: "\101\x42\u00e9\U0001F600" e: "con" 'cat' "ed" f: "\\n""#,
        )
        .unwrap();
        assert_eq!(one(&m, "a").as_str().unwrap(), "tab\there");
        assert_eq!(one(&m, "b").as_str().unwrap(), "it's");
        assert_eq!(one(&m, "c").as_str().unwrap(), "q\"q");
        assert_eq!(one(&m, "d").as_str().unwrap(), "ABé😀");
        assert_eq!(one(&m, "e").as_str().unwrap(), "concated");
        assert_eq!(one(&m, "f").as_str().unwrap(), "\\n");
        assert_eq!(
            parse("a: 'ünï'").unwrap().get("a")[0]
                .value
                .as_str()
                .unwrap(),
            "ünï"
        );
    }

    #[test]
    fn booleans_and_enums() {
        let m = parse("a: true b: false c: True d: 1 e: KIND_CPU f: \"x\"").unwrap();
        assert!(one(&m, "a").as_bool().unwrap());
        assert!(!one(&m, "b").as_bool().unwrap());
        assert!(one(&m, "c").as_bool().unwrap());
        assert!(one(&m, "d").as_bool().unwrap());
        assert_eq!(one(&m, "e").as_enum().unwrap(), "KIND_CPU");
        assert!(one(&m, "e").as_bool().is_err());
        assert!(one(&m, "f")
            .as_enum()
            .unwrap_err()
            .contains("the string \"x\""));
        assert!(one(&m, "e")
            .as_str()
            .unwrap_err()
            .contains("expected a quoted string"));
        assert!(one(&m, "a")
            .as_message()
            .unwrap_err()
            .contains("expected a message"));
    }

    #[test]
    fn empty_and_comment_only_texts() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("  # nothing\n\n# here").unwrap().is_empty());
        let m = parse("a {}\nb: {}\nc [] d: []").unwrap();
        assert_eq!(m.get("a").len(), 1);
        assert_eq!(m.get("b").len(), 1);
        assert!(m.get("c").is_empty() && m.get("d").is_empty());
        assert!(m.fields().any(|(n, _)| n == "c"));
    }

    fn err(text: &str) -> ParseError {
        parse(text).expect_err(text)
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = err("name: \"x\"\nmax_batch_size 8\n");
        assert_eq!(e.pos, Pos { line: 2, col: 16 });
        assert!(e.message.contains("expected ':' or '{'"), "{e}");
        assert!(e.to_string().starts_with("line 2 column 16: "), "{e}");

        let e = err("input {\n  name: \"x\"\n");
        assert_eq!(e.pos.line, 3);
        assert!(
            e.message.contains("expected '}' to close the message"),
            "{e}"
        );

        let e = err("a: \"open\nb: 1");
        assert_eq!(e.pos, Pos { line: 1, col: 4 });
        assert!(e.message.contains("unterminated string"), "{e}");

        let e = err("a: 'x");
        assert!(e.message.contains("unterminated string"), "{e}");

        let e = err("a: [1, 2");
        assert!(e.message.contains("expected ']' to close the list"), "{e}");

        let e = err("a: [1 2]");
        assert_eq!(e.pos, Pos { line: 1, col: 7 });
        assert!(e.message.contains("expected ',' or ']'"), "{e}");

        let e = err("a: 12abc");
        assert!(e.message.contains("right after the number 12"), "{e}");

        let e = err("a: 1.2.3");
        assert!(e.message.contains("\"1.2.3\" is not a number"), "{e}");

        let e = err("a: 08");
        assert!(e.message.contains("\"08\" is not a number"), "{e}");

        let e = err("a: \"\\q\"");
        assert_eq!(e.pos, Pos { line: 1, col: 6 });
        assert!(e.message.contains("unknown escape \\q"), "{e}");

        let e = err("a: -x");
        assert!(
            e.message.contains("'-' must be followed by a number"),
            "{e}"
        );

        let e = err("a: }");
        assert!(e.message.contains("expected a value"), "{e}");

        let e = err("}");
        assert!(e.message.contains("expected a field name, got '}'"), "{e}");

        let e = err("[ext.field]: 1");
        assert!(e.message.contains("extension"), "{e}");

        let e = err("a [1, 2]");
        assert!(e.message.contains("needs a ':'"), "{e}");

        let e = err("a");
        assert!(e.message.contains("has no value"), "{e}");

        let e = err("a: \"\\377\\376\"");
        assert!(e.message.contains("not valid UTF-8"), "{e}");

        let e = err("a: \"\\400\"");
        assert!(e.message.contains("above \\377"), "{e}");

        let e = err("a { b: 1 >");
        assert!(e.message.contains("expected a field name, got '>'"), "{e}");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = err("a: 'é' b");
        assert_eq!(e.pos, Pos { line: 1, col: 8 });
    }

    proptest::proptest! {
        /// A config.pbtxt is user input: whatever its bytes, parsing
        /// answers with a message or an error naming a line, never a panic.
        #[test]
        fn any_text_parses_or_errs_without_panicking(text in "[ -~\\n\\t{}\\[\\]:;,\"'#-]{0,200}") {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(e.to_string().contains("line"), "{e}");
            }
        }

        /// Valid configs built from pieces round-trip their scalar values.
        #[test]
        fn numbers_and_strings_survive(n in -1_000_000i64..1_000_000, s in "[a-zA-Z0-9_ ]{0,20}") {
            let text = format!("a: {n}\nb: \"{s}\"\nc {{ d: {n} }}\n");
            let m = parse(&text).unwrap();
            let shown = format!("{m:?}");
            proptest::prop_assert!(shown.contains(&n.to_string()), "{shown}");
        }
    }
}
