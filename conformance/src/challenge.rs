//! Parsing of `WWW-Authenticate` (RFC 9110 §11.6.1): one or more challenges, each a scheme and
//! `name=value` parameters whose values may be quoted strings. Registries put commas and spaces
//! inside quoted values (`scope="repository:a/b:pull,push repository:c:pull"`), so splitting on
//! commas is not enough.

use thiserror::Error;

#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased: schemes are case-insensitive.
    pub scheme: String,
    /// Names lowercased (case-insensitive too), values as sent with quoting undone.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed WWW-Authenticate {header:?} at byte {at}: {reason}")]
pub struct ChallengeError {
    pub header: String,
    pub at: usize,
    pub reason: &'static str,
}

/// Every challenge in one `WWW-Authenticate` value, in order.
pub fn parse(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let mut p = Parser { s: header, at: 0 };
    let mut challenges = Vec::new();
    loop {
        p.skip(|c| c == ',' || is_space(c));
        if p.done() {
            return Ok(challenges);
        }
        let scheme = p.take(is_tchar);
        if scheme.is_empty() {
            return Err(p.error("expected an auth scheme"));
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        loop {
            p.skip(|c| c == ',' || is_space(c));
            let start = p.at;
            let name = p.take(is_tchar);
            if name.is_empty() {
                if p.done() {
                    break;
                }
                return Err(p.error("expected a parameter name"));
            }
            p.skip(is_space);
            if !p.eat('=') {
                // A token with no `=` after it is the next challenge's scheme.
                p.at = start;
                break;
            }
            p.skip(is_space);
            let value = if p.eat('"') {
                p.quoted()?
            } else {
                // RFC 9110 wants a token here; be lenient about URLs sent unquoted.
                p.take(|c| c != ',' && c != '"' && !is_space(c)).to_string()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
        }
        challenges.push(challenge);
    }
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s[self.at..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn take(&mut self, accept: impl Fn(char) -> bool) -> &'a str {
        let start = self.at;
        while let Some(c) = self.peek().filter(|&c| accept(c)) {
            self.at += c.len_utf8();
        }
        &self.s[start..self.at]
    }

    fn skip(&mut self, accept: impl Fn(char) -> bool) {
        self.take(accept);
    }

    /// The rest of a quoted string whose opening `"` was just eaten, unescaped.
    fn quoted(&mut self) -> Result<String, ChallengeError> {
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted string")),
                Some('"') => {
                    self.at += 1;
                    return Ok(value);
                }
                Some('\\') => {
                    self.at += 1;
                    let Some(c) = self.peek() else {
                        return Err(self.error("unterminated quoted string"));
                    };
                    value.push(c);
                    self.at += c.len_utf8();
                }
                Some(c) => {
                    value.push(c);
                    self.at += c.len_utf8();
                }
            }
        }
    }

    fn error(&self, reason: &'static str) -> ChallengeError {
        ChallengeError {
            header: self.s.to_string(),
            at: self.at,
            reason,
        }
    }
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 9110 `tchar`: what schemes and parameter names are made of.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(challenge: &Challenge) -> Vec<(&str, &str)> {
        challenge
            .params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn bearer_with_commas_and_spaces_inside_the_scope() {
        let parsed = parse(
            r#"Bearer realm="http://127.0.0.1:5001/token",service="reg",scope="repository:a/b:pull,push repository:c:pull""#,
        )
        .unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].scheme, "bearer");
        assert_eq!(
            params(&parsed[0]),
            [
                ("realm", "http://127.0.0.1:5001/token"),
                ("service", "reg"),
                ("scope", "repository:a/b:pull,push repository:c:pull"),
            ]
        );
    }

    #[test]
    fn several_challenges_case_escapes_and_unquoted_values() {
        let parsed =
            parse(r#"Basic Realm="a \"b\", c" , NEWAUTH, bearer REALM = x, error=invalid_token"#)
                .unwrap();
        let schemes: Vec<&str> = parsed.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "newauth", "bearer"]);
        assert_eq!(parsed[0].param("realm"), Some(r#"a "b", c"#));
        assert!(parsed[1].params.is_empty());
        assert_eq!(
            params(&parsed[2]),
            [("realm", "x"), ("error", "invalid_token")]
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(parse(r#"Bearer realm="x"#).unwrap_err().at, 15);
        assert_eq!(
            parse("Bearer =x").unwrap_err().reason,
            "expected a parameter name"
        );
        assert!(parse("").unwrap().is_empty());
    }
}
