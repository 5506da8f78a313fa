//! `if:` expressions: a small, strict language over the run's variables.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | "(" expr ")" | compare
//! compare := operand ( ( "==" | "!=" ) operand )?
//! operand := $NAME | 'text' | "text"
//! ```
//!
//! A variable not set is the empty text; an operand alone holds when it is not empty. Nothing
//! else exists (no numbers, no functions, no regular expressions): an expression either parses
//! or is refused with the column of the problem.

use std::collections::BTreeMap;

/// An `if:` as written and as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub text: String,
    pub expr: Expr,
}

/// The variables an `if:` may name that gantry sets: the run's own (what steps see as well).
pub const KNOWN: &[&str] = &[
    "GANTRY_PROJECT",
    "GANTRY_RUN",
    "GANTRY_COMMIT",
    "GANTRY_BRANCH",
    "GANTRY_EVENT",
    "GANTRY_TAG",
    "GANTRY_PR",
    "GANTRY_PR_BASE",
    "GANTRY_PR_HEAD",
    "GANTRY_PR_FORK",
    "GANTRY_SCHEDULE",
    "GANTRY_SCHEDULED_AT",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Var(String),
    Text(String),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A problem with an expression: what, and at which character (0-based) of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub at: usize,
    pub message: String,
}

/// The most nesting an expression may have (a hostile file must not overflow the stack).
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Var(String),
    Text(String),
    EqEq,
    NotEq,
    Not,
    And,
    Or,
    Open,
    Close,
}

fn tokens(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| ExprError { at, message };
    while i < chars.len() {
        let c = chars[i];
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match c {
            ' ' | '\t' => i += 1,
            '$' => {
                let start = i;
                i += 1;
                let name_start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[name_start..i].iter().collect();
                if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(err(
                        start,
                        "`$` needs a variable name: $GANTRY_BRANCH".into(),
                    ));
                }
                out.push((start, Tok::Var(name)));
            }
            '\'' | '"' => {
                let start = i;
                i += 1;
                let text_start = i;
                while i < chars.len() && chars[i] != c {
                    i += 1;
                }
                if i == chars.len() {
                    return Err(err(
                        start,
                        format!("the text started here has no closing {c}"),
                    ));
                }
                out.push((start, Tok::Text(chars[text_start..i].iter().collect())));
                i += 1;
            }
            '(' => {
                out.push((i, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((i, Tok::Close));
                i += 1;
            }
            _ if two == "==" => {
                out.push((i, Tok::EqEq));
                i += 2;
            }
            _ if two == "!=" => {
                out.push((i, Tok::NotEq));
                i += 2;
            }
            _ if two == "&&" => {
                out.push((i, Tok::And));
                i += 2;
            }
            _ if two == "||" => {
                out.push((i, Tok::Or));
                i += 2;
            }
            '!' => {
                out.push((i, Tok::Not));
                i += 1;
            }
            '=' => return Err(err(i, "`=` alone compares nothing: write `==`".into())),
            '&' | '|' => return Err(err(i, format!("write `{c}{c}`"))),
            _ => {
                let word: String = chars[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                let message = if word.is_empty() {
                    format!("`{c}` has no meaning here")
                } else {
                    format!(
                        "`{word}` is neither a $variable nor quoted text: write '{word}' or ${word}"
                    )
                };
                return Err(err(i, message));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(a, _)| *a)
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut left = self.and(depth)?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut left = self.unary(depth)?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary(depth)?));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ExprError> {
        if depth > MAX_DEPTH {
            return Err(ExprError {
                at: self.at(),
                message: format!("nested more than {MAX_DEPTH} deep"),
            });
        }
        match self.peek() {
            Some(Tok::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::Open) => {
                let open = self.at();
                self.pos += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Tok::Close) {
                    return Err(ExprError {
                        at: open,
                        message: "this `(` is not closed".into(),
                    });
                }
                self.pos += 1;
                Ok(inner)
            }
            _ => self.compare(),
        }
    }

    fn operand(&mut self) -> Result<Expr, ExprError> {
        let at = self.at();
        match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Tok::Var(v)) => {
                self.pos += 1;
                Ok(Expr::Var(v))
            }
            Some(Tok::Text(t)) => {
                self.pos += 1;
                Ok(Expr::Text(t))
            }
            None => Err(ExprError {
                at,
                message: "the expression ends where a $variable or 'text' should be".into(),
            }),
            Some(_) => Err(ExprError {
                at,
                message: "a $variable or 'text' should be here".into(),
            }),
        }
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let left = self.operand()?;
        match self.peek() {
            Some(Tok::EqEq) => {
                self.pos += 1;
                Ok(Expr::Eq(Box::new(left), Box::new(self.operand()?)))
            }
            Some(Tok::NotEq) => {
                self.pos += 1;
                Ok(Expr::Ne(Box::new(left), Box::new(self.operand()?)))
            }
            _ => Ok(left),
        }
    }
}

impl Expr {
    pub fn parse(src: &str) -> Result<Expr, ExprError> {
        let toks = tokens(src)?;
        if toks.is_empty() {
            return Err(ExprError {
                at: 0,
                message: "the expression is empty".into(),
            });
        }
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.chars().count(),
        };
        let e = p.or(0)?;
        if p.pos < p.toks.len() {
            return Err(ExprError {
                at: p.at(),
                message: "this does not continue the expression: join with && or ||".into(),
            });
        }
        Ok(e)
    }

    /// The variables the expression reads.
    pub fn vars(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Var(v) = e {
                out.push(v.as_str());
            }
        });
        out
    }

    fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Var(_) | Expr::Text(_) => {}
            Expr::Not(e) => e.walk(f),
            Expr::Eq(a, b) | Expr::Ne(a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.walk(f);
                b.walk(f);
            }
        }
    }

    fn text<'a>(&'a self, vars: &'a BTreeMap<String, String>) -> Option<&'a str> {
        match self {
            Expr::Var(v) => Some(vars.get(v).map_or("", String::as_str)),
            Expr::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Whether the expression holds with `vars` (unset ones are empty).
    pub fn holds(&self, vars: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::Var(_) | Expr::Text(_) => self.text(vars).is_some_and(|t| !t.is_empty()),
            Expr::Eq(a, b) => a.text(vars) == b.text(vars),
            Expr::Ne(a, b) => a.text(vars) != b.text(vars),
            Expr::Not(e) => !e.holds(vars),
            Expr::And(a, b) => a.holds(vars) && b.holds(vars),
            Expr::Or(a, b) => a.holds(vars) || b.holds(vars),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_as_a_table() {
        let vars: BTreeMap<String, String> = [
            ("GANTRY_BRANCH", "main"),
            ("GANTRY_EVENT", "push"),
            ("DEPLOY", "yes"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cases = [
            ("$GANTRY_BRANCH == 'main'", true),
            ("$GANTRY_BRANCH != \"main\"", false),
            (
                "$GANTRY_BRANCH == 'main' && $GANTRY_EVENT == 'manual'",
                false,
            ),
            (
                "$GANTRY_BRANCH == 'main' && ($GANTRY_EVENT == 'manual' || $DEPLOY)",
                true,
            ),
            ("!$GANTRY_TAG", true),
            ("$GANTRY_TAG", false),
            ("$GANTRY_TAG == ''", true),
            ("'a' == 'a' || $X == 'b' && 'c' == 'd'", true),
            ("!($DEPLOY == 'yes')", false),
        ];
        for (src, want) in cases {
            let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            assert_eq!(e.holds(&vars), want, "{src}");
        }
        assert_eq!(Expr::parse("$A == 'x' && $B").unwrap().vars(), ["A", "B"]);
    }

    #[test]
    fn problems_have_columns() {
        let cases = [
            ("", 0, "the expression is empty"),
            ("$GANTRY_BRANCH = 'main'", 15, "`=` alone"),
            (
                "$GANTRY_BRANCH == main",
                18,
                "`main` is neither a $variable nor quoted text",
            ),
            ("$A == 'open", 6, "no closing '"),
            ("($A == 'x'", 0, "this `(` is not closed"),
            ("$A == 'x' $B", 10, "does not continue"),
            ("$A &", 3, "write `&&`"),
            ("$ == 'x'", 0, "`$` needs a variable name"),
            ("$A ==", 5, "the expression ends"),
            ("$A == ==", 6, "a $variable or 'text' should be here"),
        ];
        for (src, at, said) in cases {
            let e = Expr::parse(src).unwrap_err();
            assert_eq!(e.at, at, "{src}: {e:?}");
            assert!(e.message.contains(said), "{src}: {e:?}");
        }
        let deep = format!("{}$A{}", "(".repeat(100), ")".repeat(100));
        assert!(
            Expr::parse(&deep)
                .unwrap_err()
                .message
                .contains("nested more than")
        );
        let nots = format!("{}$A", "!".repeat(100));
        assert!(Expr::parse(&nots).is_err());
    }
}
