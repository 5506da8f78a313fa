//! A YAML document as a tree of nodes that remember where they were written (line and column),
//! so that every later check can point at the exact spot. Built from `yaml-rust2`'s event parser;
//! anchors, aliases and `<<` merge keys are resolved here, so the checker sees plain trees.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    /// Characters the node spans on its first line (for underlining), 0 when unknown.
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A scalar, with whether it was written plain (unquoted): `2` and `true` are plain,
    /// `"2"` is not.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicates are kept so the checker can report them.
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A syntax error: the document could not be read as YAML at all.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses the first document of `source`. An empty document is `Value::Null`.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: pos_of(e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        pos: Pos { line: 1, col: 1 },
        width: 0,
    }))
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

enum Frame {
    Seq(Node, usize),
    /// The mapping, its anchor, a key waiting for its value, and `<<` sources merged at the end
    /// (keys written in the mapping win, wherever the merge key stands).
    Map(Node, usize, Option<Node>, Vec<Node>),
}

/// Nodes a document may have once its aliases are expanded. A real pipeline has a few thousand;
/// nested aliases ("billion laughs") would otherwise grow a few hundred bytes into gigabytes.
pub const MAX_NODES: usize = 100_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes, with how many nodes each holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    /// Nodes made so far, aliases counted as the copies they become.
    nodes: usize,
}

/// How many nodes a tree holds.
fn size_of(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(size_of).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| size_of(k) + size_of(v)).sum(),
        _ => 0,
    }
}

impl Builder {
    /// Counts `n` more nodes; past [`MAX_NODES`] the document is refused at `pos`.
    fn count(&mut self, n: usize, pos: Pos) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES && self.error.is_none() {
            self.error = Some(SyntaxError {
                pos,
                message: format!(
                    "this document expands to more than {MAX_NODES} values (aliases of aliases multiply); gantry reads at most that many"
                ),
            });
        }
        self.error.is_none()
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = size_of(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, _, pending_key, merges)) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if key.as_scalar() == Some("<<") {
                        merges.push(node);
                    } else if let Value::Map(entries) = &mut map.value {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

/// `<<: *base` (or a list of them): copies the keys the mapping does not set itself.
fn merge_into(entries: &mut Vec<(Node, Node)>, source: Node) {
    let sources = match source.value {
        Value::Seq(items) => items,
        _ => vec![source],
    };
    for src in sources {
        if let Value::Map(src_entries) = src.value {
            for (k, v) in src_entries {
                if !entries
                    .iter()
                    .any(|(ek, _)| ek.as_scalar() == k.as_scalar())
                {
                    entries.push((k, v));
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = pos_of(&mark);
        if matches!(
            ev,
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
        ) && !self.count(1, pos)
        {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = matches!(style, TScalarStyle::Plain);
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.clone(),
                        plain,
                    }
                };
                let width = match style {
                    TScalarStyle::Plain => text.lines().next().map_or(0, |l| l.chars().count()),
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                        text.lines().next().map_or(0, |l| l.chars().count()) + 2
                    }
                    _ => 1,
                };
                self.push_value(Node { value, pos, width }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(
                    Node {
                        value: Value::Seq(Vec::new()),
                        pos,
                        width: 1,
                    },
                    anchor,
                ));
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(
                    Node {
                        value: Value::Map(Vec::new()),
                        pos,
                        width: 0,
                    },
                    anchor,
                    None,
                    Vec::new(),
                ));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (node, anchor) = match frame {
                        Frame::Seq(n, a) => (n, a),
                        Frame::Map(mut n, a, _, merges) => {
                            if let Value::Map(entries) = &mut n.value {
                                for source in merges {
                                    merge_into(entries, source);
                                }
                                // A block mapping starts where its first key is written.
                                if let Some((first_key, _)) = entries.first() {
                                    n.pos = first_key.pos;
                                }
                            }
                            (n, a)
                        }
                    };
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).map(|(_, size)| *size) {
                // The copy is counted before it is made: a bomb never gets built.
                Some(size) if self.count(size, pos) => {
                    let mut node = self.anchors[&id].0.clone();
                    node.pos = pos;
                    self.push_value(node, 0);
                }
                Some(_) => {}
                None => {
                    self.error = Some(SyntaxError {
                        pos,
                        message: "unknown alias".into(),
                    })
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let doc = parse("a: 1\nlist:\n  - x\n").unwrap();
        let Value::Map(entries) = doc.value else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
    }

    #[test]
    fn merge_keys_and_aliases() {
        let doc = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        let Value::Map(entries) = doc.value else {
            panic!()
        };
        let Value::Map(other) = &entries[1].1.value else {
            panic!()
        };
        let pairs: Vec<_> = other
            .iter()
            .map(|(k, v)| (k.as_scalar().unwrap(), v.as_scalar().unwrap()))
            .collect();
        assert_eq!(pairs, vec![("y", "3"), ("x", "1")]);
    }

    #[test]
    fn nested_aliases_are_refused_before_they_are_expanded() {
        // Nine levels of ten aliases each: 10^9 values if expanded.
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("expands to more than"), "{err:?}");
        assert!(err.pos.line >= 5, "{err:?}");
        // A few aliases are fine.
        assert!(parse("base: &b {x: 1}\nuse: [*b, *b, *b]\n").is_ok());
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }
}
