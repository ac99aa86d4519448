//! The `q` filter language operators already type: `field:value` terms with `__`-separated
//! paths and Django-style lookups (`service_usage__submission__current_period__gte:10`), `AND`,
//! `OR`, `NOT` (upper case; juxtaposition is AND; NOT binds tightest, then AND, then OR),
//! parentheses, quoted values, and bare words that search usernames. This module only parses;
//! [`super::fields`] types each term against the fields that exist.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Term(Term),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// `path:value`, or a bare word (then `path` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub path: String,
    pub value: String,
    /// Character offset of the term in the query, for errors.
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Character offset (from 0) where the problem is.
    pub at: usize,
    /// The offending token (empty at the end of the query).
    pub token: String,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token.is_empty() {
            write!(f, "at position {}: {}", self.at, self.message)
        } else {
            write!(f, "at position {}, {:?}: {}", self.at, self.token, self.message)
        }
    }
}

impl std::error::Error for SyntaxError {}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    /// A term: `field:value` or a bare word.
    Term(Term),
}

/// Longest accepted query, in characters.
pub const MAX_LEN: usize = 4096;

pub fn parse(query: &str) -> Result<Option<Expr>, SyntaxError> {
    if query.chars().count() > MAX_LEN {
        return Err(SyntaxError { at: MAX_LEN, token: String::new(), message: format!("the query is longer than {MAX_LEN} characters") });
    }
    let tokens = lex(query)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser { tokens, pos: 0, depth: 0, end: query.chars().count() };
    let expr = parser.or()?;
    if let Some((at, token)) = parser.tokens.get(parser.pos) {
        return Err(SyntaxError { at: *at, token: describe(token), message: "unexpected here".into() });
    }
    Ok(Some(expr))
}

fn describe(token: &Token) -> String {
    match token {
        Token::Open => "(".into(),
        Token::Close => ")".into(),
        Token::And => "AND".into(),
        Token::Or => "OR".into(),
        Token::Not => "NOT".into(),
        Token::Term(t) if t.path.is_empty() => t.value.clone(),
        Token::Term(t) => format!("{}:{}", t.path, t.value),
    }
}

/// Reads a quoted value starting at `chars[i]` (the quote); returns it and the index after it.
fn quoted(chars: &[char], i: usize) -> Result<(String, usize), SyntaxError> {
    let quote = chars[i];
    let mut value = String::new();
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if j + 1 < chars.len() && (chars[j + 1] == quote || chars[j + 1] == '\\') => {
                value.push(chars[j + 1]);
                j += 2;
            }
            c if c == quote => return Ok((value, j + 1)),
            c => {
                value.push(c);
                j += 1;
            }
        }
    }
    Err(SyntaxError { at: i, token: quote.to_string(), message: "this quote is never closed".into() })
}

fn lex(query: &str) -> Result<Vec<(usize, Token)>, SyntaxError> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '(' || c == ')' {
            tokens.push((i, if c == '(' { Token::Open } else { Token::Close }));
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            let (value, next) = quoted(&chars, i)?;
            tokens.push((i, Token::Term(Term { path: String::new(), value, at: i })));
            i = next;
            continue;
        }
        // A word runs to whitespace or a parenthesis; its first colon separates path and value,
        // and a quote right after that colon starts a quoted value.
        let start = i;
        let mut word = String::new();
        let mut value: Option<String> = None;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '(' && chars[i] != ')' {
            if value.is_none() && chars[i] == ':' {
                value = Some(String::new());
                i += 1;
                if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                    let (v, next) = quoted(&chars, i)?;
                    value = Some(v);
                    i = next;
                    break;
                }
                continue;
            }
            match &mut value {
                Some(v) => v.push(chars[i]),
                None => word.push(chars[i]),
            }
            i += 1;
        }
        let token = match (word.as_str(), value) {
            ("AND", None) => Token::And,
            ("OR", None) => Token::Or,
            ("NOT", None) => Token::Not,
            (_, None) => Token::Term(Term { path: String::new(), value: word, at: start }),
            ("", Some(_)) => {
                return Err(SyntaxError {
                    at: start,
                    token: chars[start..i].iter().collect(),
                    message: "a field name must come before the colon".into(),
                });
            }
            (_, Some(v)) => Token::Term(Term { path: word, value: v, at: start }),
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

/// Deepest nesting of parentheses and NOTs, so a hostile query cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn error_here(&self, message: &str) -> SyntaxError {
        match self.tokens.get(self.pos) {
            Some((at, token)) => SyntaxError { at: *at, token: describe(token), message: message.into() },
            None => SyntaxError { at: self.end, token: String::new(), message: message.into() },
        }
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expr::Or(parts) })
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.not()?];
        loop {
            match self.peek() {
                Some(Token::And) => {
                    self.pos += 1;
                    parts.push(self.not()?);
                }
                // Juxtaposition: `a:1 b:2` is `a:1 AND b:2`.
                Some(Token::Term(_) | Token::Not | Token::Open) => parts.push(self.not()?),
                _ => break,
            }
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expr::And(parts) })
    }

    fn not(&mut self) -> Result<Expr, SyntaxError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            self.descend()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn descend(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(&format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        match self.tokens.get(self.pos).cloned() {
            Some((_, Token::Open)) => {
                self.pos += 1;
                self.descend()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.error_here("expected a closing parenthesis"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some((_, Token::Term(term))) => {
                self.pos += 1;
                Ok(Expr::Term(term))
            }
            Some(_) => Err(self.error_here("expected a term such as username:ann, NOT or (")),
            None => Err(self.error_here("the query ends where a term was expected")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(path: &str, value: &str, at: usize) -> Expr {
        Expr::Term(Term { path: path.into(), value: value.into(), at })
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let e = parse("a:1 OR b:2 c:3 AND NOT d:4").unwrap().unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                term("a", "1", 0),
                Expr::And(vec![term("b", "2", 7), term("c", "3", 11), Expr::Not(Box::new(term("d", "4", 23)))]),
            ])
        );
    }

    #[test]
    fn parentheses_quotes_and_colons_in_values() {
        let e = parse("(a:1 OR b:\"x y\") date_joined__gte:2025-01-01T10:00:00Z").unwrap().unwrap();
        assert_eq!(
            e,
            Expr::And(vec![Expr::Or(vec![term("a", "1", 1), term("b", "x y", 8)]), term("date_joined__gte", "2025-01-01T10:00:00Z", 17)])
        );
        assert_eq!(parse("email:'o\\'brien'").unwrap().unwrap(), term("email", "o'brien", 0));
        assert_eq!(parse("  ").unwrap(), None);
    }

    #[test]
    fn bare_words_and_quoted_phrases_are_terms_without_a_path() {
        assert_eq!(parse("demo").unwrap().unwrap(), term("", "demo", 0));
        assert_eq!(parse("\"ann lee\"").unwrap().unwrap(), term("", "ann lee", 0));
        // Lower-case keywords are words.
        assert_eq!(parse("and").unwrap().unwrap(), term("", "and", 0));
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let err = |q: &str| parse(q).unwrap_err();
        let e = err("a:1 OR");
        assert_eq!((e.at, e.token.as_str()), (6, ""));
        let e = err("(a:1");
        assert_eq!(e.at, 4);
        assert!(e.message.contains("closing parenthesis"));
        let e = err("a:1)");
        assert_eq!((e.at, e.token.as_str()), (3, ")"));
        let e = err("a:\"open");
        assert_eq!((e.at, e.token.as_str()), (2, "\""));
        let e = err(":x");
        assert!(e.message.contains("field name"));
        let e = err("AND a:1");
        assert_eq!((e.at, e.token.as_str()), (0, "AND"));
        let deep = format!("{}a:1{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).message.contains("nested"));
        assert!(err(&"x".repeat(5000)).message.contains("longer"));
    }

    #[test]
    fn the_parser_never_panics_on_noise() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "ab_:\"'() \\ANDORNOT12-.:Zé".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let q: String = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let _ = parse(&q);
        }
    }
}
