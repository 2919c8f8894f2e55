//! Reading `export const meta = {...}` without running the script.
//!
//! A small tokenizer walks the module's top level (skipping comments, strings and template
//! literals so their contents never match) and a literal parser reads the object after
//! `export const meta =`: objects, arrays, strings in either quote style (with every escape,
//! non-ASCII kept intact), numbers, booleans, `null`, identifier or quoted keys, comments and
//! trailing commas. Anything computed (a variable, a call, a template with `${}`) is refused:
//! listings and history read metadata from untrusted files, so nothing is evaluated.

use serde_json::{Map, Number, Value};
use smol_durable_core::{ScriptError, ScriptErrorKind, WorkflowMeta};

/// The error when a module has no `export const meta`.
pub const MISSING_META: &str =
    "workflow metadata is missing: add `export const meta = { name: \"...\", description: \"...\" }`";
/// The error when `meta` is not a pure literal.
pub const NON_LITERAL_META: &str =
    "workflow metadata must be a literal object (no variables, calls, spreads or `${}` templates)";
/// The error when a module has no default export.
pub const MISSING_DEFAULT: &str =
    "workflow has no default export: add `export default <value | promise | function(args, ctx)>`";

/// Reads and validates the metadata of a workflow module.
pub fn read_meta(source: &str) -> Result<WorkflowMeta, ScriptError> {
    let value = meta_value(source)?;
    if !has_default_export(source) {
        return Err(error(MISSING_DEFAULT));
    }
    to_meta(value)
}

/// The literal after `export const meta =`, as JSON.
pub fn meta_value(source: &str) -> Result<Value, ScriptError> {
    let mut tokens = Tokens::new(source);
    let mut window: [Option<Token>; 4] = [None, None, None, None];
    while let Some(token) = tokens.next_token() {
        window.rotate_left(1);
        window[3] = Some(token);
        let [Some(Token::Word(a)), Some(Token::Word(b)), Some(Token::Word(c)), Some(Token::Punct('='))] =
            &window
        else {
            continue;
        };
        if a == "export" && matches!(b.as_str(), "const" | "let" | "var") && c == "meta" {
            let mut parser = Literal {
                tokens: &mut tokens,
            };
            let value = parser.value().ok_or_else(|| error(NON_LITERAL_META))?;
            // `{...} || other` is not a literal: the statement must end with the value.
            return match tokens.next_token() {
                None | Some(Token::Punct(';')) | Some(Token::Word(_)) => Ok(value),
                Some(_) => Err(error(NON_LITERAL_META)),
            };
        }
    }
    Err(error(MISSING_META))
}

fn has_default_export(source: &str) -> bool {
    let mut tokens = Tokens::new(source);
    let mut previous_export = false;
    while let Some(token) = tokens.next_token() {
        let is_word = |w: &str| matches!(&token, Token::Word(word) if word == w);
        if previous_export && is_word("default") {
            return true;
        }
        previous_export = is_word("export");
    }
    false
}

fn to_meta(value: Value) -> Result<WorkflowMeta, ScriptError> {
    let Value::Object(object) = value else {
        return Err(error(NON_LITERAL_META));
    };
    let text = |key: &str| -> Result<Option<String>, ScriptError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(error(&format!("meta.{key} must be a string, got {other}"))),
        }
    };
    let name = text("name")?.ok_or_else(|| error("meta.name is required and must be a string"))?;
    // Found by the `metadata` fuzz target: a blank name was accepted, and runs are listed,
    // filtered and shown by it.
    if name.trim().is_empty() {
        return Err(error("meta.name must not be empty"));
    }
    let mut meta = WorkflowMeta::new(name, text("description")?.unwrap_or_default());
    meta.when_to_use = text("whenToUse")?;
    match object.get("phases") {
        None | Some(Value::Null) => {}
        Some(Value::Array(phases)) => {
            for (index, phase) in phases.iter().enumerate() {
                let Value::Object(phase) = phase else {
                    return Err(error(&format!("meta.phases[{index}] must be an object")));
                };
                let field = |key: &str| -> Result<Option<String>, ScriptError> {
                    match phase.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(text)) => Ok(Some(text.clone())),
                        Some(other) => Err(error(&format!(
                            "meta.phases[{index}].{key} must be a string, got {other}"
                        ))),
                    }
                };
                let title = field("title")?.ok_or_else(|| {
                    error(&format!(
                        "meta.phases[{index}].title is required and must be a string"
                    ))
                })?;
                let mut parsed = smol_durable_core::PhaseMeta::new(title);
                parsed.detail = field("detail")?;
                parsed.model = field("model")?;
                parsed.provider = field("provider")?;
                meta.phases.push(parsed);
            }
        }
        Some(other) => return Err(error(&format!("meta.phases must be an array, got {other}"))),
    }
    Ok(meta)
}

fn error(message: &str) -> ScriptError {
    ScriptError::new(ScriptErrorKind::Metadata, message)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    /// A template literal without substitutions.
    Template(String),
    /// A template literal with `${...}`: never a literal.
    Dynamic,
    Number(String),
    Punct(char),
}

struct Tokens<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    /// The last token produced: decides whether `/` starts a regular expression.
    last: Option<Token>,
}

/// Words after which `/` starts a regular expression rather than a division.
const REGEX_AFTER_WORDS: &[&str] = &[
    "return",
    "typeof",
    "instanceof",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "case",
    "do",
    "else",
    "yield",
    "await",
];

impl<'a> Tokens<'a> {
    fn new(source: &'a str) -> Self {
        Self {
            chars: source.chars().peekable(),
            last: None,
        }
    }

    fn regex_allowed(&self) -> bool {
        match &self.last {
            None => true,
            Some(Token::Punct(c)) => !matches!(c, ')' | ']' | '}'),
            Some(Token::Word(word)) => REGEX_AFTER_WORDS.contains(&word.as_str()),
            Some(_) => false,
        }
    }

    /// Skips a regular expression literal (its opening `/` already read) and its flags.
    fn regex(&mut self) {
        let mut in_class = false;
        while let Some(c) = self.chars.next() {
            match c {
                '\\' => {
                    self.chars.next();
                }
                '[' => in_class = true,
                ']' => in_class = false,
                '/' if !in_class => break,
                '\n' => break,
                _ => {}
            }
        }
        while self.chars.peek().is_some_and(|c| c.is_alphanumeric()) {
            self.chars.next();
        }
    }

    fn skip_space_and_comments(&mut self) {
        loop {
            match self.chars.peek() {
                Some(c) if c.is_whitespace() || *c == '\u{feff}' => {
                    self.chars.next();
                }
                Some('/') => {
                    let mut ahead = self.chars.clone();
                    ahead.next();
                    match ahead.peek() {
                        Some('/') => {
                            for c in self.chars.by_ref() {
                                if c == '\n' {
                                    break;
                                }
                            }
                        }
                        Some('*') => {
                            self.chars.next();
                            self.chars.next();
                            let mut star = false;
                            for c in self.chars.by_ref() {
                                if star && c == '/' {
                                    break;
                                }
                                star = c == '*';
                            }
                        }
                        _ => return,
                    }
                }
                _ => return,
            }
        }
    }

    fn next_token(&mut self) -> Option<Token> {
        let token = self.scan()?;
        self.last = Some(token.clone());
        Some(token)
    }

    fn scan(&mut self) -> Option<Token> {
        self.skip_space_and_comments();
        let c = self.chars.next()?;
        Some(match c {
            '/' if self.regex_allowed() => {
                self.regex();
                Token::Dynamic
            }
            '"' | '\'' => Token::Str(self.string(c)),
            '`' => self.template(),
            c if c.is_ascii_digit()
                || (c == '.' && self.chars.peek().is_some_and(char::is_ascii_digit)) =>
            {
                let mut text = String::from(c);
                while let Some(&next) = self.chars.peek() {
                    let exponent_sign = matches!(next, '+' | '-')
                        && text.ends_with(['e', 'E'])
                        && !text.starts_with("0x");
                    if next.is_ascii_alphanumeric() || next == '.' || next == '_' || exponent_sign {
                        text.push(next);
                        self.chars.next();
                    } else {
                        break;
                    }
                }
                Token::Number(text)
            }
            c if c == '_' || c == '$' || c.is_alphabetic() => {
                let mut word = String::from(c);
                while let Some(&next) = self.chars.peek() {
                    if next == '_' || next == '$' || next.is_alphanumeric() {
                        word.push(next);
                        self.chars.next();
                    } else {
                        break;
                    }
                }
                Token::Word(word)
            }
            other => Token::Punct(other),
        })
    }

    fn escape(&mut self, out: &mut String) {
        let Some(c) = self.chars.next() else { return };
        match c {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '0' => out.push('\0'),
            '\n' => {}
            '\r' => {
                if self.chars.peek() == Some(&'\n') {
                    self.chars.next();
                }
            }
            'x' => {
                let hex: String = (0..2).filter_map(|_| self.chars.next()).collect();
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(ch);
                }
            }
            'u' => {
                let code = if self.chars.peek() == Some(&'{') {
                    self.chars.next();
                    let hex: String = self.chars.by_ref().take_while(|c| *c != '}').collect();
                    u32::from_str_radix(&hex, 16).ok()
                } else {
                    let hex: String = (0..4).filter_map(|_| self.chars.next()).collect();
                    u32::from_str_radix(&hex, 16).ok()
                };
                match code {
                    // A UTF-16 surrogate pair written as two escapes.
                    Some(high @ 0xD800..=0xDBFF) => {
                        let mut ahead = self.chars.clone();
                        let low = if ahead.next() == Some('\\') && ahead.next() == Some('u') {
                            let hex: String = (0..4).filter_map(|_| ahead.next()).collect();
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|l| (0xDC00..=0xDFFF).contains(l))
                        } else {
                            None
                        };
                        if let Some(low) = low {
                            self.chars = ahead;
                            let combined = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                            out.extend(char::from_u32(combined));
                        } else {
                            out.push('\u{FFFD}');
                        }
                    }
                    Some(code) => out.push(char::from_u32(code).unwrap_or('\u{FFFD}')),
                    None => out.push('\u{FFFD}'),
                }
            }
            other => out.push(other),
        }
    }

    fn string(&mut self, quote: char) -> String {
        let mut out = String::new();
        while let Some(c) = self.chars.next() {
            match c {
                '\\' => self.escape(&mut out),
                c if c == quote => break,
                c => out.push(c),
            }
        }
        out
    }

    fn template(&mut self) -> Token {
        let mut out = String::new();
        let mut dynamic = false;
        while let Some(c) = self.chars.next() {
            match c {
                '\\' => self.escape(&mut out),
                '`' => break,
                '$' if self.chars.peek() == Some(&'{') => {
                    dynamic = true;
                    self.chars.next();
                    // The substitution is code: tokenize it (strings, templates and regular
                    // expressions included) up to its closing brace.
                    self.last = Some(Token::Punct('{'));
                    let mut depth = 1;
                    while depth > 0 {
                        match self.next_token() {
                            Some(Token::Punct('{')) => depth += 1,
                            Some(Token::Punct('}')) => depth -= 1,
                            Some(_) => {}
                            None => break,
                        }
                    }
                }
                c => out.push(c),
            }
        }
        if dynamic {
            Token::Dynamic
        } else {
            Token::Template(out)
        }
    }
}

/// Parses one literal value from the token stream; `None` when it is not a pure literal.
struct Literal<'t, 'a> {
    tokens: &'t mut Tokens<'a>,
}

impl Literal<'_, '_> {
    fn value(&mut self) -> Option<Value> {
        let token = self.tokens.next_token()?;
        self.value_of(token)
    }

    fn value_of(&mut self, token: Token) -> Option<Value> {
        match token {
            Token::Str(text) | Token::Template(text) => Some(Value::String(text)),
            Token::Number(text) => number(&text, false),
            Token::Punct('-') => match self.tokens.next_token()? {
                Token::Number(text) => number(&text, true),
                _ => None,
            },
            Token::Punct('+') => match self.tokens.next_token()? {
                Token::Number(text) => number(&text, false),
                _ => None,
            },
            Token::Word(word) => match word.as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                "null" => Some(Value::Null),
                _ => None,
            },
            Token::Punct('{') => self.object(),
            Token::Punct('[') => self.array(),
            _ => None,
        }
    }

    fn object(&mut self) -> Option<Value> {
        let mut map = Map::new();
        loop {
            let key = match self.tokens.next_token()? {
                Token::Punct('}') => return Some(Value::Object(map)),
                Token::Word(word) => word,
                Token::Str(text) => text,
                Token::Number(text) => text,
                _ => return None,
            };
            if self.tokens.next_token()? != Token::Punct(':') {
                return None;
            }
            let value = self.value()?;
            map.insert(key, value);
            match self.tokens.next_token()? {
                Token::Punct(',') => continue,
                Token::Punct('}') => return Some(Value::Object(map)),
                _ => return None,
            }
        }
    }

    fn array(&mut self) -> Option<Value> {
        let mut items = Vec::new();
        loop {
            let token = self.tokens.next_token()?;
            if token == Token::Punct(']') {
                return Some(Value::Array(items));
            }
            items.push(self.value_of(token)?);
            match self.tokens.next_token()? {
                Token::Punct(',') => continue,
                Token::Punct(']') => return Some(Value::Array(items)),
                _ => return None,
            }
        }
    }
}

fn number(text: &str, negative: bool) -> Option<Value> {
    let clean = text.replace('_', "");
    let magnitude = if let Some(hex) = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok().map(|n| n as f64)?
    } else {
        clean.parse::<f64>().ok()?
    };
    let value = if negative { -magnitude } else { magnitude };
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Some(Value::Number(Number::from(value as i64)))
    } else {
        Number::from_f64(value).map(Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_literal_with_comments_quotes_and_trailing_commas() {
        let source = r#"
            // export const meta = { name: "commented out" };
            /* a block comment with export const meta = 1 */
            const helper = "export const meta = 'inside a string'";
            export const meta = {
              name: 'research', // a comment
              "description": "Finds things — and writes them ✓",
              whenToUse: `when you need "facts"`,
              phases: [
                { title: "plan", model: 'fast', },
                { 'title': "write", detail: "draft\n\u00e9\u{1F600}", provider: "debug" },
              ],
              n: -1.5e3, hex: 0x1F, flags: [true, false, null],
            };
            export default 42;
        "#;
        let value = meta_value(source).expect("meta");
        assert_eq!(
            value["description"],
            json!("Finds things — and writes them ✓")
        );
        assert_eq!(value["whenToUse"], json!("when you need \"facts\""));
        assert_eq!(value["phases"][1]["detail"], json!("draft\né😀"));
        assert_eq!(value["n"], json!(-1500));
        assert_eq!(value["hex"], json!(31));
        assert_eq!(value["flags"], json!([true, false, null]));
        let meta = read_meta(source).expect("meta");
        assert_eq!(meta.name, "research");
        assert_eq!(meta.phases.len(), 2);
        assert_eq!(
            meta.phase("plan").and_then(|p| p.model.as_deref()),
            Some("fast")
        );
        assert_eq!(
            meta.phase("write").and_then(|p| p.provider.as_deref()),
            Some("debug")
        );
    }

    #[test]
    fn non_ascii_survives_intact() {
        let source = "export const meta = { name: \"日本語のワークフロー\", description: 'Ünïcødé — ok' };\nexport default 1;";
        let meta = read_meta(source).expect("meta");
        assert_eq!(meta.name, "日本語のワークフロー");
        assert_eq!(meta.description, "Ünïcødé — ok");
    }

    #[test]
    fn dynamic_values_are_refused() {
        for source in [
            "const n = 'x'; export const meta = { name: n }; export default 1;",
            "export const meta = { name: `a${1}` }; export default 1;",
            "export const meta = { name: 'a', ...other }; export default 1;",
            "export const meta = make(); export default 1;",
            "export const meta = { name: 'a' + 'b' }; export default 1;",
        ] {
            let error = read_meta(source).expect_err(source);
            assert_eq!(error.message(), NON_LITERAL_META, "{source}");
        }
    }

    #[test]
    fn missing_meta_and_missing_default_export_have_clear_errors() {
        let error = read_meta("export default 1;").expect_err("no meta");
        assert_eq!(error.message(), MISSING_META);
        assert_eq!(error.kind(), ScriptErrorKind::Metadata);
        for blank in ["\"\"", "'   '", "`\t`"] {
            let source = format!("export const meta = {{ name: {blank} }};\nexport default 1;");
            let error = read_meta(&source).expect_err("a blank name");
            assert_eq!(error.message(), "meta.name must not be empty", "{source}");
        }
        let error = read_meta("export const meta = { name: 'x' };").expect_err("no default");
        assert_eq!(error.message(), MISSING_DEFAULT);
        let error = read_meta("export const meta = { description: 'x' }; export default 1;")
            .expect_err("no name");
        assert!(error.message().contains("meta.name"));
    }

    #[test]
    fn regular_expressions_and_template_substitutions_do_not_derail_the_scan() {
        let source = r#"export const meta = { name: "regex" };
const trim = (s) => s.replace(/\/*$/, "");
const quotes = /['"]/g;
const nested = `${"`"} and ${ { a: "}" }.a } and ${`inner ${1}`}`;
const ratio = (a, b) => a / b / 2;
export default { trim, quotes, nested, ratio };
"#;
        assert_eq!(read_meta(source).expect("meta").name, "regex");
    }

    #[test]
    fn a_literal_followed_by_an_operator_is_not_a_literal() {
        let error = read_meta("export const meta = { name: 'x' } || other;\nexport default 1;")
            .expect_err("operator");
        assert_eq!(error.message(), NON_LITERAL_META);
        assert!(read_meta("export const meta = { name: 'x' }\nexport default 1;").is_ok());
    }

    #[test]
    fn default_export_forms_are_recognised() {
        for source in [
            "export const meta = { name: 'x' }; export default async function (args, ctx) {}",
            "export const meta = { name: 'x' };\nexport\ndefault { ok: true };",
        ] {
            assert!(read_meta(source).is_ok(), "{source}");
        }
    }
}
