//! A small ClickHouse lexer: just enough to tell words, quoted text, comments and symbols apart by
//! byte range. It backs placeholder extraction, the BI endpoint's recognition of `SHOW`/`DESCRIBE`/
//! `EXISTS` and its trailing `FORMAT`, and SQL normalization for cache keys. Statements it cannot
//! classify go to the full parser, which denies by default.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bare word: keyword or identifier (`[A-Za-z_][A-Za-z0-9_$]*`).
    Word,
    /// A number, possibly with a fraction, exponent or hex digits.
    Number,
    /// `'…'`, with `\` escapes and `''` doubling.
    String,
    /// `"…"` or `` `…` ``.
    QuotedIdent,
    /// `-- …`, `# …` or `/* … */`.
    Comment,
    Space,
    /// Any other single character.
    Symbol,
}

/// One token: its kind and byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }

    /// Whether this is the word `word` (ASCII case-insensitive).
    pub fn is_word(&self, sql: &str, word: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(word)
    }

    /// Whether this is the symbol `symbol`.
    pub fn is_symbol(&self, sql: &str, symbol: char) -> bool {
        self.kind == Kind::Symbol && self.text(sql).starts_with(symbol)
    }

    /// An identifier's value: a bare word, or quoted text without its quotes (escapes kept).
    pub fn ident<'a>(&self, sql: &'a str) -> Option<&'a str> {
        match self.kind {
            Kind::Word => Some(self.text(sql)),
            Kind::QuotedIdent => {
                let text = self.text(sql);
                (text.len() >= 2).then(|| &text[1..text.len() - 1])
            }
            _ => None,
        }
    }
}

/// Splits `sql` into tokens covering every byte. An unterminated quote or comment runs to the end.
pub fn tokens(sql: &str) -> Vec<Token> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let kind = match bytes[i] {
            c if is_space(c) => {
                while i < bytes.len() && is_space(bytes[i]) {
                    i += 1;
                }
                Kind::Space
            }
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => break,
                        Some(b'\\') => i += 2,
                        Some(&c) if c == quote => {
                            // A doubled quote is an escaped quote, not the end.
                            if bytes.get(i + 1) == Some(&quote) {
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
                i = i.min(bytes.len());
                if quote == b'\'' {
                    Kind::String
                } else {
                    Kind::QuotedIdent
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                Kind::Comment
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                Kind::Comment
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(bytes.len());
                Kind::Comment
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'$')
                {
                    i += 1;
                }
                Kind::Word
            }
            c if c.is_ascii_digit() => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                Kind::Number
            }
            _ => {
                // One character, however many bytes it takes.
                i += sql[i..].chars().next().map_or(1, char::len_utf8);
                Kind::Symbol
            }
        };
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    out
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Tokens that carry meaning: no spaces, no comments.
pub fn significant(sql: &str) -> Vec<Token> {
    tokens(sql)
        .into_iter()
        .filter(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
        .collect()
}

/// `sql` with runs of spaces and comments outside quotes collapsed to one space, trimmed, and a
/// trailing `;` removed: two texts that normalize alike are the same statement.
pub fn normalize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut pending_space = false;
    for token in tokens(sql) {
        match token.kind {
            Kind::Space | Kind::Comment => pending_space = true,
            _ => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.push_str(token.text(sql));
            }
        }
    }
    while out.ends_with(';') {
        out.pop();
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        tokens(sql).iter().map(|t| (t.kind, t.text(sql))).collect()
    }

    #[test]
    fn tokens_cover_quotes_comments_and_words() {
        assert_eq!(
            kinds("SELECT 'a''b\\'', `x y` -- c\n/* d */ #e"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Space, " "),
                (Kind::String, "'a''b\\''"),
                (Kind::Symbol, ","),
                (Kind::Space, " "),
                (Kind::QuotedIdent, "`x y`"),
                (Kind::Space, " "),
                (Kind::Comment, "-- c"),
                (Kind::Space, "\n"),
                (Kind::Comment, "/* d */"),
                (Kind::Space, " "),
                (Kind::Comment, "#e"),
            ]
        );
        let text = "SELECT 'unterminated";
        assert_eq!(tokens(text).last().map(|t| t.end), Some(text.len()));
        assert_eq!(
            kinds("é1.5e3"),
            vec![(Kind::Symbol, "é"), (Kind::Number, "1.5e3")]
        );
    }

    #[test]
    fn normalization_keeps_quoted_text_and_drops_layout() {
        assert_eq!(
            normalize("  SELECT  a,\n\tb -- note\n FROM t WHERE s = 'x  y' ;; "),
            "SELECT a, b FROM t WHERE s = 'x  y'"
        );
        assert_ne!(normalize("SELECT 'a b'"), normalize("SELECT 'a  b'"));
    }
}
