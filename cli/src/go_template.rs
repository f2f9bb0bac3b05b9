//! The part of Go's text/template that docker's `--format` flags are written in, over JSON
//! values: `docker images --format '{{.Repository}}:{{.Tag}}'`,
//! `docker inspect -f '{{index .RepoDigests 0}}'`, `{{json .Config.Labels}}`,
//! `{{range .Config.Env}}{{println .}}{{end}}`.
//!
//! Supported: text and actions (`{{- … -}}` trims spaces), fields (`.`, `.A.B`), variables
//! (`$`, `$x := …`, `$x = …`, `$x.A`, `range $k, $v := …`), string and number literals,
//! pipelines (`|`), parenthesised pipelines, `if`/`else`/`end`, `range`/`else`/`end` (over
//! arrays, and over objects in key order), and the functions docker scripts use: `json`,
//! `index`, `len`, `join`, `split`, `lower`, `upper`, `title`, `println`, `printf`
//! (`%s %v %d %q %%`), `eq`, `ne`, `not`. Values print as Go prints decoded JSON: arrays as
//! `[a b]`, objects as `map[k:v]`, null as `<nil>`, a missing key as `<no value>`; fields
//! named in [`Template::with_go_types`] print as the Go types docker's structs give them
//! (a nil `Labels` map as `map[]`, an absent `User` as ``). Anything else is an error naming
//! the template, never wrong output.

use serde_json::Value;

#[derive(Debug)]
pub struct Template {
    nodes: Vec<Node>,
    /// As written, for errors (which name it, as docker's do).
    source: String,
    go_types: &'static [(&'static str, GoType)],
}

/// The Go type of a struct field, where its JSON cannot tell: how its zero value prints when
/// the JSON has null or omits it, and what `index` gives for a key a map lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoType {
    String,
    Bool,
    Slice,
    /// `map[string]string`: a missing key indexes to "".
    StringMap,
    /// `map[string]struct{}` (ports, volumes): values print as `{}`.
    StructSetMap,
    Pointer,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Pipeline),
    /// `$x := pipeline` (declares) or `$x = pipeline` (assigns); prints nothing.
    Declare {
        name: String,
        assign: bool,
        pipeline: Pipeline,
    },
    If(Pipeline, Vec<Node>, Vec<Node>),
    /// The variables it declares (none, `$v`, or `$k, $v`), the pipeline, body, else.
    Range(Vec<String>, Pipeline, Vec<Node>, Vec<Node>),
}

/// Commands joined by `|`: each one's result is the last argument of the next.
type Pipeline = Vec<Command>;

#[derive(Debug)]
enum Command {
    /// A lone operand: a field, a literal or a parenthesised pipeline.
    Operand(Operand),
    Call(String, Vec<Operand>),
}

#[derive(Debug)]
enum Operand {
    /// `.` (empty) or `.A.B`.
    Field(Vec<String>),
    Literal(Value),
    Nested(Pipeline),
    /// `$name` (`$` alone: empty) and a field path after it.
    Variable(String, Vec<String>),
}

/// What a lookup gives: a value, a value of a field whose Go type is known, or Go's
/// "no value" for a key that is not there.
#[derive(Debug, Clone)]
enum Data {
    Value(Value),
    Typed(Value, GoType),
    Missing,
}

impl Template {
    pub fn parse(source: &str) -> anyhow::Result<Template> {
        let parsed = split_actions(source).and_then(|actions| {
            let mut pieces = actions.into_iter().peekable();
            match parse_nodes(&mut pieces)? {
                (nodes, None) => Ok(nodes),
                (_, Some(word)) => Err(format!("unexpected {{{{{word}}}}}")),
            }
        });
        match parsed {
            Ok(nodes) => Ok(Template {
                nodes,
                source: source.to_string(),
                go_types: &[],
            }),
            Err(e) => anyhow::bail!("template parsing error: {e}: {source:?}"),
        }
    }

    /// Renders fields with these names as values of these Go types (docker's structs).
    pub fn with_go_types(mut self, go_types: &'static [(&'static str, GoType)]) -> Template {
        self.go_types = go_types;
        self
    }

    pub fn render(&self, data: &Value) -> anyhow::Result<String> {
        let mut renderer = Renderer {
            go_types: self.go_types,
            variables: vec![(String::new(), Data::Value(data.clone()))],
            out: String::new(),
        };
        match renderer.nodes(&self.nodes, data) {
            Ok(()) => Ok(renderer.out),
            Err(e) => anyhow::bail!("template: {e}: {:?}", self.source),
        }
    }
}

/// A piece of template source: text, or the inside of an action.
enum Piece {
    Text(String),
    Action(String),
}

fn split_actions(source: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed action: {{ without }}".to_string())?;
        let mut inner = &after[..end];
        if let Some(trimmed) = inner.strip_prefix("- ") {
            text = text.trim_end();
            inner = trimmed;
        }
        let mut trim_next = false;
        if let Some(trimmed) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = trimmed;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        pieces.push(Piece::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
        if trim_next {
            rest = rest.trim_start();
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// Parses nodes up to an `else` or `end` (returned) or the end of the template (`None`).
fn parse_nodes(
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(piece) = pieces.next() {
        let action = match piece {
            Piece::Text(text) => {
                nodes.push(Node::Text(text));
                continue;
            }
            Piece::Action(action) => action,
        };
        let (keyword, rest) = action
            .split_once(char::is_whitespace)
            .unwrap_or((action.as_str(), ""));
        match keyword {
            "end" | "else" if rest.trim().is_empty() => return Ok((nodes, Some(keyword.into()))),
            "if" | "range" => {
                let mut tokens = Tokens::new(rest)?;
                let variables = match tokens.declaration()? {
                    Some((names, false)) if keyword == "range" && names.len() <= 2 => names,
                    Some(_) => return Err(format!("bad variable declaration in {{{{{action}}}}}")),
                    None => Vec::new(),
                };
                let pipeline = parse_pipeline(&mut tokens)?;
                let (body, end) = parse_nodes(pieces)?;
                let otherwise = match end.as_deref() {
                    Some("end") => Vec::new(),
                    Some("else") => match parse_nodes(pieces)? {
                        (otherwise, Some(end)) if end == "end" => otherwise,
                        _ => {
                            return Err(format!(
                                "{{{{{keyword}}}}} … {{{{else}}}} without {{{{end}}}}"
                            ))
                        }
                    },
                    _ => return Err(format!("{{{{{keyword}}}}} without {{{{end}}}}")),
                };
                nodes.push(if keyword == "if" {
                    Node::If(pipeline, body, otherwise)
                } else {
                    Node::Range(variables, pipeline, body, otherwise)
                });
            }
            _ if action.starts_with("/*") => {} // a comment
            _ => {
                let mut tokens = Tokens::new(&action)?;
                let declared = tokens.declaration()?;
                let pipeline = parse_pipeline(&mut tokens)?;
                nodes.push(match declared {
                    None => Node::Print(pipeline),
                    Some((mut names, assign)) if names.len() == 1 => Node::Declare {
                        name: names.remove(0),
                        assign,
                        pipeline,
                    },
                    Some(_) => return Err(format!("bad variable declaration in {{{{{action}}}}}")),
                });
            }
        }
    }
    Ok((nodes, None))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(Vec<String>),
    Variable(String, Vec<String>),
    /// `:=`, or `=` (false).
    Declare(bool),
    Comma,
    Word(String),
    Literal(Value),
    Pipe,
    Open,
    Close,
}

struct Tokens {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokens {
    fn new(source: &str) -> Result<Tokens, String> {
        let mut tokens = Vec::new();
        let chars: Vec<char> = source.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let word_end = |from: usize| {
                let mut j = from;
                while j < chars.len() && (chars[j].is_alphanumeric() || "_.-".contains(chars[j])) {
                    j += 1;
                }
                j
            };
            match c {
                _ if c.is_whitespace() => i += 1,
                '|' => {
                    tokens.push(Token::Pipe);
                    i += 1;
                }
                '(' => {
                    tokens.push(Token::Open);
                    i += 1;
                }
                ')' => {
                    tokens.push(Token::Close);
                    i += 1;
                }
                '.' => {
                    let end = word_end(i + 1);
                    tokens.push(Token::Field(field_path(&chars[i + 1..end])));
                    i = end;
                }
                '$' => {
                    let mut end = i + 1;
                    while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                        end += 1;
                    }
                    let name: String = chars[i + 1..end].iter().collect();
                    let path_end = word_end(end);
                    let path = match chars.get(end) {
                        Some('.') => field_path(&chars[end..path_end]),
                        _ => Vec::new(),
                    };
                    i = if path.is_empty() { end } else { path_end };
                    tokens.push(Token::Variable(name, path));
                }
                ':' if chars.get(i + 1) == Some(&'=') => {
                    tokens.push(Token::Declare(true));
                    i += 2;
                }
                '=' => {
                    tokens.push(Token::Declare(false));
                    i += 1;
                }
                ',' => {
                    tokens.push(Token::Comma);
                    i += 1;
                }
                '"' | '`' => {
                    let (text, end) = string_literal(&chars, i)?;
                    tokens.push(Token::Literal(Value::String(text)));
                    i = end;
                }
                _ if c.is_ascii_digit() || c == '-' => {
                    let end = word_end(i + 1);
                    let text: String = chars[i..end].iter().collect();
                    let number = text
                        .parse::<i64>()
                        .map(Value::from)
                        .or_else(|_| text.parse::<f64>().map(Value::from))
                        .map_err(|_| format!("bad number {text:?}"))?;
                    tokens.push(Token::Literal(number));
                    i = end;
                }
                _ if c.is_alphabetic() => {
                    let end = word_end(i);
                    let word: String = chars[i..end].iter().collect();
                    tokens.push(match word.as_str() {
                        "true" => Token::Literal(Value::Bool(true)),
                        "false" => Token::Literal(Value::Bool(false)),
                        "nil" => Token::Literal(Value::Null),
                        _ => Token::Word(word),
                    });
                    i = end;
                }
                _ => return Err(format!("unexpected {c:?} in action")),
            }
        }
        Ok(Tokens { tokens, at: 0 })
    }

    /// `$x :=`, `$x =` or `$k, $v :=` at the start: the names and whether it declares.
    fn declaration(&mut self) -> Result<Option<(Vec<String>, bool)>, String> {
        let mut names = Vec::new();
        let mut at = self.at;
        loop {
            match (self.tokens.get(at), self.tokens.get(at + 1)) {
                (Some(Token::Variable(name, path)), Some(Token::Comma)) if path.is_empty() => {
                    names.push(name.clone());
                    at += 2;
                }
                (Some(Token::Variable(name, path)), Some(Token::Declare(declares)))
                    if path.is_empty() =>
                {
                    names.push(name.clone());
                    self.at = at + 2;
                    return Ok(Some((names, !declares)));
                }
                _ if names.is_empty() => return Ok(None),
                _ => return Err("a variable list without := after it".into()),
            }
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }
}

/// `A.B` (after a `.` or a variable) as field names.
fn field_path(chars: &[char]) -> Vec<String> {
    let path: String = chars.iter().collect();
    path.split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// A Go string literal starting at `chars[start]` ("…" with escapes, or `…` raw); returns it
/// and the index after it.
fn string_literal(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            c if c == quote => return Ok((text, i + 1)),
            '\\' if quote == '"' => {
                i += 1;
                text.push(match chars.get(i) {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(&c @ ('\\' | '"')) => c,
                    other => return Err(format!("unsupported escape \\{other:?} in a string")),
                });
            }
            c => text.push(c),
        }
        i += 1;
    }
    Err("unterminated string".into())
}

fn parse_pipeline(tokens: &mut Tokens) -> Result<Pipeline, String> {
    let mut pipeline = Vec::new();
    loop {
        let mut operands = Vec::new();
        let mut function = None;
        while let Some(token) = tokens.peek() {
            if matches!(token, Token::Pipe | Token::Close) {
                break;
            }
            match tokens.next() {
                Some(Token::Word(word)) if function.is_none() && operands.is_empty() => {
                    function = Some(word)
                }
                Some(Token::Word(word)) => return Err(format!("{word:?} is not an argument")),
                Some(Token::Field(path)) => operands.push(Operand::Field(path)),
                Some(Token::Variable(name, path)) => operands.push(Operand::Variable(name, path)),
                Some(Token::Literal(value)) => operands.push(Operand::Literal(value)),
                Some(Token::Open) => {
                    operands.push(Operand::Nested(parse_pipeline(tokens)?));
                    if tokens.next() != Some(Token::Close) {
                        return Err("unclosed (".into());
                    }
                }
                Some(Token::Declare(_) | Token::Comma) => {
                    return Err("unexpected := , or = in a pipeline".into())
                }
                _ => unreachable!("peeked"),
            }
        }
        pipeline.push(match function {
            Some(name) => Command::Call(name, operands),
            None if operands.len() == 1 => Command::Operand(operands.remove(0)),
            None if operands.is_empty() => return Err("missing value in action".into()),
            None => return Err("more than one value without a function".into()),
        });
        match tokens.peek() {
            Some(Token::Pipe) => {
                tokens.next();
            }
            _ => return Ok(pipeline),
        }
    }
}

/// A template's rendering: its output, and the variables in scope (`$` first).
struct Renderer {
    go_types: &'static [(&'static str, GoType)],
    variables: Vec<(String, Data)>,
    out: String,
}

impl Renderer {
    fn nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<(), String> {
        // Variables declared here go out of scope at the end of the list, as Go's at `end`.
        let scope = self.variables.len();
        for node in nodes {
            match node {
                Node::Text(text) => self.out.push_str(text),
                Node::Print(pipeline) => {
                    let printed = printed(&self.run(pipeline, dot)?);
                    self.out.push_str(&printed);
                }
                Node::Declare {
                    name,
                    assign,
                    pipeline,
                } => {
                    let value = self.run(pipeline, dot)?;
                    if !assign {
                        self.variables.push((name.clone(), value));
                        continue;
                    }
                    match self.variables.iter_mut().rev().find(|(n, _)| n == name) {
                        Some(slot) => slot.1 = value,
                        None => return Err(format!("undefined variable ${name}")),
                    }
                }
                Node::If(pipeline, body, otherwise) => {
                    let branch = if truthy(&self.run(pipeline, dot)?) {
                        body
                    } else {
                        otherwise
                    };
                    self.nodes(branch, dot)?;
                }
                Node::Range(names, pipeline, body, otherwise) => {
                    let items: Vec<(Value, Value)> = match value_of(self.run(pipeline, dot)?) {
                        Value::Array(items) => items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::from(i), v))
                            .collect(),
                        Value::Object(map) => {
                            let mut entries: Vec<_> = map.into_iter().collect();
                            entries.sort_by(|a, b| a.0.cmp(&b.0));
                            entries
                                .into_iter()
                                .map(|(k, v)| (Value::String(k), v))
                                .collect()
                        }
                        Value::Null => Vec::new(),
                        other => return Err(format!("range can't iterate over {other}")),
                    };
                    if items.is_empty() {
                        self.nodes(otherwise, dot)?;
                    }
                    for (key, item) in items {
                        let outer = self.variables.len();
                        // `range $v :=` takes the element; `range $k, $v :=` the key too.
                        if let [key_name, _] = names.as_slice() {
                            self.variables.push((key_name.clone(), Data::Value(key)));
                        }
                        if let Some(value_name) = names.last() {
                            self.variables
                                .push((value_name.clone(), Data::Value(item.clone())));
                        }
                        self.nodes(body, &item)?;
                        self.variables.truncate(outer);
                    }
                }
            }
        }
        self.variables.truncate(scope);
        Ok(())
    }

    fn run(&self, pipeline: &Pipeline, dot: &Value) -> Result<Data, String> {
        let mut result: Option<Data> = None;
        for command in pipeline {
            result = Some(match command {
                Command::Operand(operand) => match result {
                    Some(_) => return Err("a value can't take a piped argument".into()),
                    None => self.evaluate(operand, dot)?,
                },
                Command::Call(name, operands) => {
                    let mut args = operands
                        .iter()
                        .map(|o| self.evaluate(o, dot))
                        .collect::<Result<Vec<_>, _>>()?;
                    args.extend(result.take());
                    call(name, args)?
                }
            });
        }
        result.ok_or_else(|| "empty pipeline".into())
    }

    fn evaluate(&self, operand: &Operand, dot: &Value) -> Result<Data, String> {
        match operand {
            Operand::Literal(value) => Ok(Data::Value(value.clone())),
            Operand::Nested(pipeline) => self.run(pipeline, dot),
            Operand::Field(path) => self.lookup(dot, path),
            Operand::Variable(name, path) => {
                let (_, data) = self
                    .variables
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| format!("undefined variable ${name}"))?;
                match (data, path.is_empty()) {
                    (data, true) => Ok(data.clone()),
                    (Data::Value(value) | Data::Typed(value, _), false) => self.lookup(value, path),
                    (Data::Missing, false) => Ok(Data::Missing),
                }
            }
        }
    }

    /// Follows a field path from `start`; the last field's Go type, when known, types the result.
    fn lookup(&self, start: &Value, path: &[String]) -> Result<Data, String> {
        let mut current = start;
        for (n, name) in path.iter().enumerate() {
            let found = match current {
                Value::Object(map) => map.get(name),
                Value::Null => None,
                other => return Err(format!("can't evaluate field {name} in {other}")),
            };
            let go_type = match n + 1 == path.len() {
                true => self
                    .go_types
                    .iter()
                    .find(|(f, _)| f == name)
                    .map(|(_, t)| *t),
                false => None,
            };
            current = match (found, go_type) {
                (Some(value), None) => value,
                // A field docker's struct has but its JSON omits: the type's zero value.
                (found, Some(t)) => {
                    return Ok(Data::Typed(found.cloned().unwrap_or(Value::Null), t))
                }
                (None, None) => return Ok(Data::Missing),
            };
        }
        Ok(Data::Value(current.clone()))
    }
}

/// The value of data as functions see it: a Go zero value for an omitted string or bool.
fn value_of(data: Data) -> Value {
    match data {
        Data::Value(value) => value,
        Data::Typed(Value::Null, GoType::String) => Value::String(String::new()),
        Data::Typed(Value::Null, GoType::Bool) => Value::Bool(false),
        Data::Typed(value, _) => value,
        Data::Missing => Value::Null,
    }
}

fn call(name: &str, args: Vec<Data>) -> Result<Data, String> {
    // `index` of a map[string]string gives "" for a key it lacks, nil or not.
    let indexes_string_map = matches!(args.first(), Some(Data::Typed(_, GoType::StringMap)));
    let values: Vec<Value> = args.into_iter().map(value_of).collect();
    let want = |n: usize| {
        if values.len() == n {
            Ok(())
        } else {
            Err(format!("{name} wants {n} arguments, got {}", values.len()))
        }
    };
    let string = |s: String| Ok(Data::Value(Value::String(s)));
    match name {
        "json" => {
            want(1)?;
            string(serde_json::to_string(&values[0]).map_err(|e| e.to_string())?)
        }
        "len" => {
            want(1)?;
            let len = match &values[0] {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.len(),
                Value::Null => 0,
                other => return Err(format!("len of {other}")),
            };
            Ok(Data::Value(Value::from(len)))
        }
        "index" => {
            let (first, keys) = values
                .split_first()
                .ok_or_else(|| "index wants arguments".to_string())?;
            let mut current = first.clone();
            for key in keys {
                current = match (&current, key) {
                    (Value::Array(items), Value::Number(n)) => n
                        .as_u64()
                        .and_then(|i| items.get(i as usize))
                        .cloned()
                        .ok_or_else(|| format!("index {n} out of range"))?,
                    (Value::Object(map), Value::String(k)) => match map.get(k) {
                        Some(v) => v.clone(),
                        None if indexes_string_map => Value::String(String::new()),
                        None => return Ok(Data::Missing),
                    },
                    (Value::Null, Value::String(_)) if indexes_string_map => {
                        Value::String(String::new())
                    }
                    (container, key) => return Err(format!("can't index {container} with {key}")),
                };
            }
            Ok(Data::Value(current))
        }
        "join" => {
            want(2)?;
            let items = values[0]
                .as_array()
                .ok_or_else(|| "join wants a list".to_string())?;
            let parts: Vec<String> = items.iter().map(shown).collect();
            string(parts.join(&shown(&values[1])))
        }
        "split" => {
            want(2)?;
            let parts = shown(&values[0])
                .split(shown(&values[1]).as_str())
                .map(|p| Value::String(p.to_string()))
                .collect();
            Ok(Data::Value(Value::Array(parts)))
        }
        "lower" | "upper" | "title" => {
            want(1)?;
            let s = shown(&values[0]);
            string(match name {
                "lower" => s.to_lowercase(),
                "upper" => s.to_uppercase(),
                _ => title_case(&s),
            })
        }
        "println" => string(values.iter().map(shown).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => {
            let (format, args) = values
                .split_first()
                .ok_or_else(|| "printf wants a format".to_string())?;
            string(printf(&shown(format), args)?)
        }
        "eq" | "ne" => {
            want(2)?;
            let equal = values[0] == values[1];
            Ok(Data::Value(Value::Bool(equal == (name == "eq"))))
        }
        "not" => {
            want(1)?;
            Ok(Data::Value(Value::Bool(!is_true(&values[0]))))
        }
        _ => Err(format!("function {name:?} not defined")),
    }
}

fn title_case(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

fn printf(format: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let verb = chars.next().ok_or("printf: format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args
            .next()
            .ok_or_else(|| format!("printf: missing argument for %{verb}"))?;
        let text = shown(arg);
        match verb {
            's' | 'v' | 'd' => out.push_str(&text),
            'q' => out.push_str(&serde_json::to_string(&text).map_err(|e| e.to_string())?),
            _ => return Err(format!("printf: verb %{verb} is not supported")),
        }
    }
    Ok(out)
}

fn truthy(data: &Data) -> bool {
    match data {
        Data::Missing => false,
        Data::Value(value) | Data::Typed(value, _) => is_true(value),
    }
}

/// Go's truth: not the zero value, not empty.
fn is_true(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn printed(data: &Data) -> String {
    match data {
        Data::Missing => "<no value>".into(),
        Data::Value(value) => shown(value),
        Data::Typed(Value::Null, go_type) => match go_type {
            GoType::String => String::new(),
            GoType::Bool => "false".into(),
            GoType::Slice => "[]".into(),
            GoType::StringMap | GoType::StructSetMap => "map[]".into(),
            GoType::Pointer => "<nil>".into(),
        },
        Data::Typed(Value::Object(map), GoType::StructSetMap) => {
            let mut keys: Vec<String> = map.keys().map(|k| format!("{k}:{{}}")).collect();
            keys.sort();
            format!("map[{}]", keys.join(" "))
        }
        Data::Typed(value, _) => shown(value),
    }
}

/// How Go's fmt prints a value decoded from JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(shown).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", shown(v)))
                .collect();
            parts.sort();
            format!("map[{}]", parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, data: &Value) -> String {
        Template::parse(template)
            .and_then(|t| t.render(data))
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    /// Formats from docker's documentation and common CI scripts.
    #[test]
    fn docker_format_strings() {
        let image = json!({
            "Id": "sha256:abc",
            "RepoTags": ["app:1", "app:latest"],
            "RepoDigests": ["app@sha256:def"],
            "Size": 1985584,
            "Config": {
                "Env": ["PATH=/bin", "A=b"],
                "Labels": {"b": "2", "a": "1"},
                "Entrypoint": null,
            },
        });
        assert_eq!(render("{{.Id}}", &image), "sha256:abc");
        assert_eq!(render("{{index .RepoDigests 0}}", &image), "app@sha256:def");
        assert_eq!(render("{{.Size}}", &image), "1985584");
        assert_eq!(render("{{.Config.Env}}", &image), "[PATH=/bin A=b]");
        assert_eq!(render("{{.Config.Labels}}", &image), "map[a:1 b:2]");
        assert_eq!(
            render("{{json .Config.Labels}}", &image),
            r#"{"a":"1","b":"2"}"#
        );
        assert_eq!(render(r#"{{index .Config.Labels "b"}}"#, &image), "2");
        assert_eq!(render("{{.Config.Entrypoint}}", &image), "<nil>");
        assert_eq!(render("{{.Nope}}", &image), "<no value>");
        assert_eq!(
            render("{{range .Config.Env}}{{println .}}{{end}}", &image),
            "PATH=/bin\nA=b\n"
        );
        assert_eq!(
            render(r#"{{join .RepoTags ","}}"#, &image),
            "app:1,app:latest"
        );
        assert_eq!(
            render("{{len .RepoTags}} {{.Id | upper}}", &image),
            "2 SHA256:ABC"
        );
        assert_eq!(
            render(r#"{{if .Config.Entrypoint}}yes{{else}}no{{end}}"#, &image),
            "no"
        );
        assert_eq!(
            render(r#"{{printf "%s=%d" (index .RepoTags 0) .Size}}"#, &image),
            "app:1=1985584"
        );
        assert_eq!(render("a {{- .Id -}} \n b", &image), "asha256:abcb");
        assert_eq!(
            render(r#"{{if eq .Size 1985584}}big{{end}}"#, &image),
            "big"
        );
    }

    #[test]
    fn variables_as_go_scopes_them() {
        let image = json!({
            "Id": "sha256:abc",
            "RepoTags": ["app:1", "app:2"],
            "Config": {"Labels": {"b": "2", "a": "1"}},
        });
        assert_eq!(
            render(
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
                &image
            ),
            "a=1;b=2;"
        );
        assert_eq!(
            render(
                "{{range $i, $t := .RepoTags}}{{$i}}:{{$t}}@{{$.Id}} {{end}}",
                &image
            ),
            "0:app:1@sha256:abc 1:app:2@sha256:abc "
        );
        assert_eq!(
            render("{{range $t := .RepoTags}}{{.}}={{$t}} {{end}}", &image),
            "app:1=app:1 app:2=app:2 "
        );
        assert_eq!(
            render(
                "{{$c := .Config}}{{$c.Labels.a}} {{$x := 1}}{{$x = 2}}{{$x}}",
                &image
            ),
            "1 2"
        );
        // A variable declared in a range body is gone after its end.
        let scoped = Template::parse("{{range .RepoTags}}{{$t := .}}{{end}}{{$t}}").unwrap();
        assert!(scoped.render(&image).is_err());
    }

    /// With docker's field types, nulls and omitted fields print as docker's typed templates.
    #[test]
    fn go_types_print_zero_values_as_docker() {
        const TYPES: &[(&str, GoType)] = &[
            ("User", GoType::String),
            ("Tty", GoType::Bool),
            ("Cmd", GoType::Slice),
            ("Labels", GoType::StringMap),
            ("ExposedPorts", GoType::StructSetMap),
            ("Healthcheck", GoType::Pointer),
        ];
        let typed = |template: &str, data: &Value| {
            Template::parse(template)
                .unwrap()
                .with_go_types(TYPES)
                .render(data)
                .unwrap()
        };
        let bare = json!({"Config": {"Labels": null, "Cmd": null}});
        assert_eq!(
            typed(
                "{{.Config.User}}|{{.Config.Tty}}|{{.Config.Cmd}}|{{.Config.Labels}}|{{.Config.ExposedPorts}}|{{.Config.Healthcheck}}",
                &bare
            ),
            "|false|[]|map[]|map[]|<nil>"
        );
        assert_eq!(typed(r#"{{index .Config.Labels "a"}}|"#, &bare), "|");
        assert_eq!(
            typed("{{json .Config.Labels}} {{json .Config.User}}", &bare),
            r#"null """#
        );
        assert_eq!(
            typed("{{len .Config.Cmd}}{{if .Config.Labels}}x{{end}}", &bare),
            "0"
        );
        let full = json!({"Config": {"Labels": {"a": "1"}, "ExposedPorts": {"80/tcp": {}}}});
        assert_eq!(
            typed(
                r#"{{index .Config.Labels "a"}}|{{index .Config.Labels "b"}}|{{.Config.ExposedPorts}}"#,
                &full
            ),
            "1||map[80/tcp:{}]"
        );
        // Untyped, a missing key stays Go's "no value".
        assert_eq!(
            render(r#"{{index .Config.Labels "b"}}"#, &full),
            "<no value>"
        );
    }

    #[test]
    fn bad_templates_are_errors() {
        for bad in [
            "{{.Id",
            "{{if .Id}}x",
            "{{end}}",
            "{{nope .Id}}",
            "{{$x}}",
            "{{$x = .Id}}",
            "{{$a, $b := .Id}}",
            "{{if $a, $b := .Id}}{{end}}",
            "{{range $a, $b, $c := .Id}}{{end}}",
            "{{.Id := 1}}",
            r#"{{"unterminated}}"#,
        ] {
            let result = Template::parse(bad).and_then(|t| t.render(&json!({"Id": "x"})));
            assert!(result.is_err(), "{bad} gave {result:?}");
        }
    }
}
