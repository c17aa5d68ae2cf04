//! Where each field of a `config.pbtxt` is written: `prost_reflect` parses
//! the text but keeps no positions (its errors give a byte offset), while
//! messages name settings by path and line. This scans the structure alone
//! (comments, strings, words, `{ } [ ] < > : , ;`), leaving the syntax to
//! `prost_reflect`, to map a path with indices (`input[1].reshape`) to its
//! value and an offset to the innermost field; and it finds the message
//! lists written without a colon (`input [ {...} ]`, as most Triton configs
//! do), which `prost_reflect` 0.16 cannot parse.

use std::collections::HashMap;
use std::ops::Range;

/// One value of a field as written: one per element of a list, and one
/// ending in `[]` for an empty list (`value`: the brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// Every field name from the top with its index among the values of
    /// that name in its message (0 for a singular field): `input[1].name[0]`.
    pub path: String,
    pub name: Range<usize>,
    /// A scalar, or a message with its braces.
    pub value: Range<usize>,
}

/// The spots of a text, in text order (a message before its fields).
#[derive(Debug, Default)]
pub struct Positions {
    pub spots: Vec<Spot>,
    /// Offsets of the `[` of message lists (or empty lists) written without
    /// a colon after the field name, where the reader inserts one.
    pub missing_colons: Vec<usize>,
}

/// `path` with every index, as [`Spot::path`] writes it.
fn full(path: &str) -> String {
    let index = |s: &str| format!("{s}{}", if s.ends_with(']') { "" } else { "[0]" });
    path.split('.').map(index).collect::<Vec<_>>().join(".")
}

/// The field of a full path: the path without its last index.
fn field(path: &str) -> &str {
    path.rsplit_once('[').map_or(path, |(f, _)| f)
}

impl Positions {
    /// The value at `path` (`input[1].reshape`; no index means 0).
    pub fn find(&self, path: &str) -> Option<&Spot> {
        let want = full(path);
        self.spots.iter().find(|s| s.path == want)
    }

    /// Whether the field of `path` is written at all (an empty list too).
    pub fn mentioned(&self, path: &str) -> bool {
        let want = full(path);
        self.spots.iter().any(|s| field(&s.path) == field(&want))
    }

    /// How many values the field of `spot` is given in its message.
    pub fn count(&self, spot: &Spot) -> usize {
        let same = |s: &&Spot| field(&s.path) == field(&spot.path) && !s.path.ends_with("[]");
        self.spots.iter().filter(same).count()
    }

    /// The innermost value (or field name) that byte `offset` is in.
    pub fn at(&self, offset: usize) -> Option<&Spot> {
        let inside = |s: &&Spot| s.value.contains(&offset) || s.name.contains(&offset);
        let depth = |s: &&Spot| (s.path.matches('.').count(), usize::MAX - s.value.start);
        self.spots.iter().filter(inside).max_by_key(depth)
    }

    pub fn scan(text: &str) -> Positions {
        let tokens = tokens(text);
        let tok = |k: usize| tokens.get(k).map_or("", |r| &text[r.clone()]);
        let mut out = Positions::default();
        let (mut frames, mut sign) = (vec![Frame::default()], None);
        for (k, r) in tokens.iter().enumerate() {
            let (t, before) = (tok(k), k.checked_sub(1).map_or("", tok));
            let quoted = |t: &str| t.starts_with(['"', '\'']);
            let scalar = quoted(t)
                || t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let depth = frames.len();
            let f = frames.last_mut().expect("the top frame is never closed");
            match t {
                "[" if f.field.is_some() => {
                    f.list = true;
                    if before != ":" && matches!(tok(k + 1), "]" | "{" | "<") {
                        out.missing_colons.push(r.start);
                    }
                    if tok(k + 1) == "]" {
                        out.spots.push(f.spot(r.start..tokens[k + 1].end, true));
                    }
                }
                "]" => (f.field, f.list) = (None, false),
                "{" | "<" if f.field.is_some() && depth < 64 => {
                    let (spot, mut next) = (f.spot(r.clone(), false), Frame::default());
                    next.close = if t == "{" { "}" } else { ">" };
                    (next.prefix, next.at) = (format!("{}.", spot.path), out.spots.len());
                    out.spots.push(spot);
                    frames.push(next);
                }
                "}" | ">" if depth > 1 && t == f.close => {
                    out.spots[f.at].value.end = r.end;
                    frames.pop();
                }
                "-" => sign = Some(r.start),
                _ if quoted(t) && quoted(before) => {
                    out.spots.last_mut().map_or((), |s| s.value.end = r.end)
                }
                _ if f.field.is_some() && scalar => {
                    out.spots
                        .push(f.spot(sign.take().unwrap_or(r.start)..r.end, false));
                }
                _ if scalar => f.field = Some((t, r.clone())),
                _ => {}
            }
        }
        out
    }
}

/// An open message: its fields' path prefix, values per name, closing token,
/// spot, and the field whose value comes next (and whether in a list).
#[derive(Default)]
struct Frame<'a> {
    prefix: String,
    counts: HashMap<&'a str, usize>,
    close: &'a str,
    at: usize,
    field: Option<(&'a str, Range<usize>)>,
    list: bool,
}

impl Frame<'_> {
    /// A value of the current field; the field is done unless in a list.
    fn spot(&mut self, value: Range<usize>, empty_list: bool) -> Spot {
        let (field, name) = self.field.clone().unwrap_or_default();
        let n = self.counts.entry(field).or_insert(0);
        let index: String = if empty_list { "".into() } else { n.to_string() };
        *n += usize::from(!empty_list);
        let path = format!("{}{field}[{index}]", self.prefix);
        self.field = self.field.take().filter(|_| self.list);
        Spot { path, name, value }
    }
}

/// Byte ranges of tokens: a punctuation character, a quoted string, or a
/// word (identifier or number). Comments and whitespace are dropped.
fn tokens(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let (start, c) = (i, b[i]);
        i += text[i..].chars().next().map_or(1, char::len_utf8);
        match c {
            b'#' => i += text[i..].find('\n').unwrap_or(text.len() - i),
            b'"' | b'\'' => {
                while i < b.len() && b[i] != c && b[i] != b'\n' {
                    i += 1 + usize::from(b[i] == b'\\');
                }
                i = (i + 1).min(b.len());
            }
            // A sign only after the exponent of a number (`1e-5`).
            _ if word(c) => {
                let number = c.is_ascii_digit() || c == b'.';
                let sign = |i: usize| number && b"+-".contains(&b[i]) && b"eE".contains(&b[i - 1]);
                while i < b.len() && (word(b[i]) || sign(i)) {
                    i += 1;
                }
            }
            _ => {}
        }
        if c != b'#' && !c.is_ascii_whitespace() {
            out.push(start..i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: \"m\" # a comment { [\n\
        input [ { name: 'x' dims: [ 1, -2 ] },\n  { name: \"y\" \"z\" reshape < shape: [] > } ]\n\
        input { dims: 1e-3 }\nversion_policy: { all {} }\n";

    fn value<'a>(p: &Positions, path: &str) -> Option<&'a str> {
        p.find(path).map(|s| &TEXT[s.value.clone()])
    }

    #[test]
    fn paths_find_values() {
        let p = Positions::scan(TEXT);
        assert_eq!(value(&p, "name"), Some("\"m\""));
        assert_eq!(value(&p, "input[0].dims[1]"), Some("-2"));
        assert_eq!(value(&p, "input[1].name"), Some("\"y\" \"z\""));
        assert_eq!(value(&p, "input[1].reshape"), Some("< shape: [] >"));
        assert_eq!(value(&p, "input[2].dims"), Some("1e-3"));
        assert_eq!(value(&p, "version_policy.all"), Some("{}"));
        assert_eq!(value(&p, "input[3]"), None);
        let input = p.find("input[1]").unwrap();
        assert!(TEXT[input.value.clone()].starts_with("{ name: \"y\""));
        assert_eq!(&TEXT[input.name.clone()], "input");
        // An empty list is written, with no value.
        assert!(p.mentioned("input[1].reshape.shape"));
        assert!(p.find("input[1].reshape.shape").is_none());
        assert!(!p.mentioned("input[2].name"));
        assert_eq!(p.count(input), 3);
        assert_eq!(p.count(p.find("input[0].dims").unwrap()), 2);
    }

    #[test]
    fn offsets_find_the_innermost_field() {
        let p = Positions::scan(TEXT);
        let at = |needle: &str| p.at(TEXT.find(needle).unwrap()).unwrap().path.clone();
        assert_eq!(at("-2"), "input[0].dims[1]");
        assert_eq!(at("reshape"), "input[1].reshape[0]");
        assert_eq!(at("shape:"), "input[1].reshape[0].shape[]");
        assert_eq!(at("[]"), "input[1].reshape[0].shape[]");
        assert_eq!(at("all"), "version_policy[0].all[0]");
        assert_eq!(at("input {"), "input[2]");
    }

    #[test]
    fn lists_of_messages_without_a_colon() {
        let text = "input [ { dims [] } ]\ndims: [ 1 ] output[{}] x [ 1 ] y: [ {} ]";
        let p = Positions::scan(text);
        let at: Vec<&str> = p
            .missing_colons
            .iter()
            .map(|&c| &text[c - 2..c + 2])
            .collect();
        assert_eq!(at, ["t [ ", "s []", "ut[{"]);
    }

    proptest::proptest! {
        /// The scanner runs on texts that failed to parse too: no panic,
        /// and every spot lies in the text.
        #[test]
        fn any_text_scans(text in "[ -~\\n\\té{}\\[\\]<>:;,\"'#-]{0,200}") {
            let p = Positions::scan(&text);
            for s in &p.spots {
                proptest::prop_assert!(s.value.end <= text.len() && s.name.end <= text.len());
                proptest::prop_assert!(text.get(s.value.clone()).is_some());
            }
            let _ = p.at(text.len() / 2);
            proptest::prop_assert!(p.missing_colons.iter().all(|&c| &text[c..c + 1] == "["));
        }
    }
}
