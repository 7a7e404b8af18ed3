//! OData query options on directory collections (contract §3.6): `$filter` (a parser and
//! evaluator for the subset directory objects support), `$select`, `$top`, `$orderby`,
//! `$count`, `$search`, paging with `$skiptoken` / `@odata.nextLink`, and the
//! advanced-query gate (`ConsistencyLevel: eventual` + `$count=true`).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::errors::GraphError;

/// Parsed query options. Option names are accepted with or without `$`, in any case.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    /// All decoded pairs in order (for rebuilding `nextLink`).
    pub pairs: Vec<(String, String)>,
    pub filter: Option<String>,
    pub select: Option<Vec<String>>,
    pub expand: Option<String>,
    pub top: Option<String>,
    pub skiptoken: Option<String>,
    pub deltatoken: Option<String>,
    pub count: bool,
    pub search: Option<String>,
    pub orderby: Option<String>,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Query {
        let mut q = Query::default();
        let Some(raw) = raw else { return q };
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            let name = k.trim_start_matches('$').to_ascii_lowercase();
            match name.as_str() {
                "filter" => q.filter = Some(v.clone()),
                "select" => {
                    q.select = Some(
                        v.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                }
                "expand" => q.expand = Some(v.clone()),
                "top" => q.top = Some(v.clone()),
                "skiptoken" => q.skiptoken = Some(v.clone()),
                "deltatoken" => q.deltatoken = Some(v.clone()),
                "count" => q.count = v.eq_ignore_ascii_case("true"),
                "search" => q.search = Some(v.clone()),
                "orderby" => q.orderby = Some(v.clone()),
                _ => {}
            }
            q.pairs.push((k, v));
        }
        q
    }

    /// `$top`, validated: 1..=999 (contract §3.6).
    pub(crate) fn page_size(&self, default: usize) -> Result<usize, GraphError> {
        match &self.top {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=999).contains(&n) => Ok(n),
                _ => Err(GraphError::bad_request(format!(
                    "Invalid page size specified: '{v}'. Must be between 1 and 999 inclusive."
                ))),
            },
        }
    }

    /// The query string without paging tokens, for building links.
    pub(crate) fn without_tokens(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter(|(k, _)| {
                let n = k.trim_start_matches('$').to_ascii_lowercase();
                n != "skiptoken" && n != "deltatoken"
            })
            .cloned()
            .collect()
    }
}

/// Build `{url}?{pairs}`.
pub(crate) fn link(url: &str, pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return url.to_string();
    }
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    format!("{url}?{}", ser.finish())
}

/// Which properties of a resource can be filtered, and how.
pub(crate) struct ResourceInfo {
    /// OData type name for messages (`Application`).
    pub name: &'static str,
    /// Properties that support `eq`/`in`/`startsWith` (and `ge`/`le` for dates) by default.
    pub basic: &'static [&'static str],
    /// Collections whose `any()` works by default.
    pub basic_collections: &'static [&'static str],
    /// Properties (or paths) that need advanced query parameters.
    pub advanced: &'static [&'static str],
    /// Collections whose `any()` needs advanced query parameters.
    pub advanced_collections: &'static [&'static str],
}

pub(crate) const APPLICATION: ResourceInfo = ResourceInfo {
    name: "Application",
    basic: &[
        "id",
        "appId",
        "displayName",
        "uniqueName",
        "signInAudience",
        "publisherDomain",
        "createdDateTime",
    ],
    basic_collections: &["tags", "identifierUris"],
    advanced: &["description", "notes", "serviceManagementReference"],
    advanced_collections: &[
        "federatedIdentityCredentials",
        "web/redirectUris",
        "spa/redirectUris",
        "publicClient/redirectUris",
        "requiredResourceAccess",
        "passwordCredentials",
        "keyCredentials",
    ],
};

pub(crate) const SERVICE_PRINCIPAL: ResourceInfo = ResourceInfo {
    name: "ServicePrincipal",
    basic: &[
        "id",
        "appId",
        "displayName",
        "accountEnabled",
        "appOwnerOrganizationId",
        "servicePrincipalType",
        "publisherName",
        "appDisplayName",
    ],
    basic_collections: &["tags", "servicePrincipalNames"],
    advanced: &["description", "notes"],
    advanced_collections: &["replyUrls", "passwordCredentials", "keyCredentials"],
};

// ---------------------------------------------------------------------------------------
// $filter

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Colon,
    Slash,
    Str(String),
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1
            }
            '/' => {
                out.push(Tok::Slash);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                let numeric = c.is_ascii_digit();
                while i < chars.len() {
                    let ch = chars[i];
                    let ok = ch.is_alphanumeric()
                        || matches!(ch, '_' | '$' | '.' | '-' | '+' | '@')
                        || (numeric && ch == ':');
                    if !ok {
                        break;
                    }
                    i += 1;
                }
                if i == start {
                    return Err(format!("unexpected character '{c}'"));
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Date(DateTime<Utc>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Vec<String>, Op, Lit),
    In(Vec<String>, Vec<Lit>),
    /// `startswith` / `endswith`.
    Func(String, Vec<String>, Lit),
    Any(Vec<String>, String, Box<Expr>),
    /// `path/$count op n`.
    Count(Vec<String>, Op, Lit),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {t:?}, found {other:?}")),
        }
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Word(w)) => {
                let lower = w.to_ascii_lowercase();
                if (lower == "startswith" || lower == "endswith") && self.peek() == Some(&Tok::LParen) {
                    self.pos += 1;
                    let path = self.path()?;
                    self.expect(Tok::Comma)?;
                    let lit = self.literal()?;
                    self.expect(Tok::RParen)?;
                    return Ok(Expr::Func(lower, path, lit));
                }
                self.pos -= 1;
                let mut path = self.path()?;
                let last = path.last().map(|s| s.to_ascii_lowercase()).unwrap_or_default();
                if (last == "any" || last == "all") && self.peek() == Some(&Tok::LParen) {
                    if last == "all" {
                        return Err("all() is not supported".into());
                    }
                    path.pop();
                    self.pos += 1;
                    let var = match self.next() {
                        Some(Tok::Word(v)) => v,
                        other => return Err(format!("expected lambda variable, found {other:?}")),
                    };
                    self.expect(Tok::Colon)?;
                    let inner = self.or()?;
                    self.expect(Tok::RParen)?;
                    return Ok(Expr::Any(path, var, Box::new(inner)));
                }
                let op = match self.next() {
                    Some(Tok::Word(op)) => op.to_ascii_lowercase(),
                    other => return Err(format!("expected an operator, found {other:?}")),
                };
                if op == "in" {
                    self.expect(Tok::LParen)?;
                    let mut values = vec![self.literal()?];
                    while self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                        values.push(self.literal()?);
                    }
                    self.expect(Tok::RParen)?;
                    return Ok(Expr::In(path, values));
                }
                let op = match op.as_str() {
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    "gt" => Op::Gt,
                    "ge" => Op::Ge,
                    "lt" => Op::Lt,
                    "le" => Op::Le,
                    _ => return Err(format!("unknown operator '{op}'")),
                };
                let lit = self.literal()?;
                if last == "$count" {
                    path.pop();
                    return Ok(Expr::Count(path, op, lit));
                }
                Ok(Expr::Cmp(path, op, lit))
            }
            other => Err(format!("unexpected token {other:?}")),
        }
    }

    fn path(&mut self) -> Result<Vec<String>, String> {
        let mut path = match self.next() {
            Some(Tok::Word(w)) => vec![w],
            other => return Err(format!("expected a property, found {other:?}")),
        };
        while self.peek() == Some(&Tok::Slash) {
            self.pos += 1;
            match self.next() {
                Some(Tok::Word(w)) => path.push(w),
                other => return Err(format!("expected a property after '/', found {other:?}")),
            }
        }
        Ok(path)
    }

    fn literal(&mut self) -> Result<Lit, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Word(w)) => {
                let lower = w.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => Ok(Lit::Bool(true)),
                    "false" => Ok(Lit::Bool(false)),
                    "null" => Ok(Lit::Null),
                    _ => {
                        if let Ok(d) = DateTime::parse_from_rfc3339(&w) {
                            Ok(Lit::Date(d.with_timezone(&Utc)))
                        } else if let Ok(n) = w.parse::<f64>() {
                            Ok(Lit::Num(n))
                        } else {
                            Err(format!("invalid literal '{w}'"))
                        }
                    }
                }
            }
            other => Err(format!("expected a literal, found {other:?}")),
        }
    }
}

/// A parsed `$filter`, checked against a resource's filterable properties.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    expr: Expr,
    /// Uses something that needs `ConsistencyLevel: eventual` + `$count=true`.
    pub advanced: Option<String>,
}

impl Filter {
    pub(crate) fn parse(text: &str, res: &ResourceInfo) -> Result<Filter, GraphError> {
        let toks =
            tokenize(text).map_err(|e| GraphError::bad_request(format!("Invalid filter clause: {e}")))?;
        let mut p = Parser { toks, pos: 0 };
        let expr = p
            .or()
            .map_err(|e| GraphError::bad_request(format!("Invalid filter clause: {e}")))?;
        if p.pos < p.toks.len() {
            return Err(GraphError::bad_request(
                "Invalid filter clause: syntax error at end of expression",
            ));
        }
        let mut advanced = None;
        classify(&expr, res, &[], &mut advanced)?;
        Ok(Filter { expr, advanced })
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        eval(&self.expr, obj, &[])
    }

    /// `id eq '..' [or id eq '..']`: the only filter delta accepts (contract §3.7).
    pub(crate) fn ids_only(&self) -> Option<Vec<String>> {
        fn walk(e: &Expr, out: &mut Vec<String>) -> bool {
            match e {
                Expr::Or(a, b) => walk(a, out) && walk(b, out),
                Expr::Cmp(p, Op::Eq, Lit::Str(s)) if p.len() == 1 && p[0] == "id" => {
                    out.push(s.clone());
                    true
                }
                _ => false,
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out).then_some(out)
    }
}

fn unsupported_property(path: &[String], res: &ResourceInfo) -> GraphError {
    GraphError::unsupported_query(format!(
        "Unsupported or invalid query filter clause specified for property '{}' of resource '{}'.",
        path.join("/"),
        res.name
    ))
}

fn mark(advanced: &mut Option<String>, why: &str) {
    if advanced.is_none() {
        *advanced = Some(why.to_string());
    }
}

fn classify(
    e: &Expr,
    res: &ResourceInfo,
    vars: &[String],
    adv: &mut Option<String>,
) -> Result<(), GraphError> {
    let is_var = |p: &[String]| p.first().is_some_and(|f| vars.contains(f));
    let kind = |p: &[String]| -> Option<bool> {
        // Some(false) = basic property, Some(true) = advanced, None = unknown
        let joined = p.join("/");
        if res.basic.iter().any(|b| b.eq_ignore_ascii_case(&joined)) {
            Some(false)
        } else if res.advanced.iter().any(|b| b.eq_ignore_ascii_case(&joined)) {
            Some(true)
        } else {
            None
        }
    };
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            classify(a, res, vars, adv)?;
            classify(b, res, vars, adv)
        }
        Expr::Not(a) => {
            mark(adv, "Operator 'not'");
            classify(a, res, vars, adv)
        }
        Expr::Cmp(p, op, _) => {
            if *op == Op::Ne {
                mark(adv, "Operator 'ne'");
            }
            if is_var(p) {
                return Ok(());
            }
            match kind(p) {
                None => Err(unsupported_property(p, res)),
                Some(true) => {
                    mark(adv, &format!("Filter on property '{}'", p.join("/")));
                    Ok(())
                }
                Some(false) => {
                    let date = p.join("/").eq_ignore_ascii_case("createdDateTime");
                    if matches!(op, Op::Gt | Op::Lt) || (!date && matches!(op, Op::Ge | Op::Le)) {
                        mark(adv, "Range operator");
                    }
                    Ok(())
                }
            }
        }
        Expr::In(p, _) => {
            if is_var(p) {
                return Ok(());
            }
            match kind(p) {
                None => Err(unsupported_property(p, res)),
                Some(true) => {
                    mark(adv, &format!("Filter on property '{}'", p.join("/")));
                    Ok(())
                }
                Some(false) => Ok(()),
            }
        }
        Expr::Func(name, p, _) => {
            if name == "endswith" {
                mark(adv, "Operator 'endsWith'");
            }
            if is_var(p) {
                return Ok(());
            }
            match kind(p) {
                None => Err(unsupported_property(p, res)),
                Some(true) => {
                    mark(adv, &format!("Filter on property '{}'", p.join("/")));
                    Ok(())
                }
                Some(false) => Ok(()),
            }
        }
        Expr::Any(p, var, inner) => {
            let joined = p.join("/");
            if res
                .basic_collections
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&joined))
            {
            } else if res
                .advanced_collections
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&joined))
            {
                mark(adv, &format!("Lambda on '{joined}'"));
            } else {
                return Err(unsupported_property(p, res));
            }
            let mut vars = vars.to_vec();
            vars.push(var.clone());
            classify(inner, res, &vars, adv)
        }
        Expr::Count(p, _, _) => {
            mark(adv, "$count in $filter");
            let joined = p.join("/");
            if res
                .basic_collections
                .iter()
                .chain(res.advanced_collections)
                .any(|c| c.eq_ignore_ascii_case(&joined))
            {
                Ok(())
            } else {
                Err(unsupported_property(p, res))
            }
        }
    }
}

fn resolve<'a>(path: &[String], root: &'a Value, env: &[(String, &'a Value)]) -> Option<&'a Value> {
    let (mut cur, rest) = match env.iter().rev().find(|(v, _)| Some(v) == path.first()) {
        Some((_, v)) => (*v, &path[1..]),
        None => (root, path),
    };
    for seg in rest {
        cur = cur
            .as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(seg))
            .map(|(_, v)| v)?;
    }
    Some(cur)
}

fn compare(v: Option<&Value>, op: Op, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (v, lit) {
        (None | Some(Value::Null), Lit::Null) => Some(Ordering::Equal),
        (_, Lit::Null) => None,
        (Some(Value::String(s)), Lit::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Some(Value::String(s)), Lit::Date(d)) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|x| x.with_timezone(&Utc).cmp(d)),
        (Some(Value::Bool(b)), Lit::Bool(l)) => Some(b.cmp(l)),
        (Some(Value::Number(n)), Lit::Num(l)) => n.as_f64().and_then(|x| x.partial_cmp(l)),
        _ => None,
    };
    match (op, ord) {
        (Op::Ne, None) => true,
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
    }
}

fn eval(e: &Expr, root: &Value, env: &[(String, &Value)]) -> bool {
    match e {
        Expr::And(a, b) => eval(a, root, env) && eval(b, root, env),
        Expr::Or(a, b) => eval(a, root, env) || eval(b, root, env),
        Expr::Not(a) => !eval(a, root, env),
        Expr::Cmp(p, op, lit) => compare(resolve(p, root, env), *op, lit),
        Expr::In(p, lits) => {
            let v = resolve(p, root, env);
            lits.iter().any(|l| compare(v, Op::Eq, l))
        }
        Expr::Func(name, p, Lit::Str(prefix)) => match resolve(p, root, env) {
            Some(Value::String(s)) => {
                let (s, prefix) = (s.to_lowercase(), prefix.to_lowercase());
                if name == "startswith" {
                    s.starts_with(&prefix)
                } else {
                    s.ends_with(&prefix)
                }
            }
            _ => false,
        },
        Expr::Func(..) => false,
        Expr::Any(p, var, inner) => match resolve(p, root, env) {
            Some(Value::Array(items)) => items.iter().any(|item| {
                let mut env2: Vec<(String, &Value)> = env.to_vec();
                env2.push((var.clone(), item));
                eval(inner, root, &env2)
            }),
            _ => false,
        },
        Expr::Count(p, op, lit) => {
            let n = match resolve(p, root, env) {
                Some(Value::Array(a)) => a.len(),
                _ => 0,
            };
            compare(Some(&json!(n)), *op, lit)
        }
    }
}

// ---------------------------------------------------------------------------------------
// $select

/// Keep only the selected properties (plus `keep`, e.g. expanded navigation properties).
/// Unknown names are a 400, as Graph answers.
pub(crate) fn select(
    obj: &Value,
    names: &[String],
    keep: &[&str],
    type_name: &str,
) -> Result<Value, GraphError> {
    let Some(map) = obj.as_object() else {
        return Ok(obj.clone());
    };
    let mut out = Map::new();
    for k in keep {
        if let Some(v) = map.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    for n in names {
        match map.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)) {
            Some((k, v)) => {
                out.insert(k.clone(), v.clone());
            }
            None => {
                return Err(GraphError::bad_request(format!(
                    "Could not find a property named '{n}' on type 'microsoft.graph.{type_name}'."
                )))
            }
        }
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------
// Listing

/// One listable object: its creation sequence (stable order) and its Graph JSON.
pub(crate) struct Item {
    pub seq: u64,
    pub obj: Value,
}

/// How a listing request was made.
pub(crate) struct ListRequest<'a> {
    pub query: &'a Query,
    /// `ConsistencyLevel: eventual` present.
    pub eventual: bool,
    pub resource: &'a ResourceInfo,
    /// OData type name for `$select` errors (`application`).
    pub type_name: &'a str,
    /// `@odata.context` value.
    pub context: String,
    /// Absolute URL of the collection, for `@odata.nextLink`.
    pub self_url: String,
    /// Navigation properties to keep through `$select` (expanded ones).
    pub keep: &'a [&'a str],
}

/// Apply `$search`, `$filter`, `$orderby`, `$count`, paging and `$select`.
pub(crate) fn list(mut items: Vec<Item>, req: &ListRequest<'_>) -> Result<Value, GraphError> {
    let q = req.query;
    let advanced_ok = req.eventual && q.count;
    if let Some(search) = &q.search {
        if !req.eventual {
            return Err(GraphError::unsupported_query(
                "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
            ));
        }
        let clauses = parse_search(search)?;
        items.retain(|i| search_matches(&clauses, &i.obj));
    }
    if let Some(text) = &q.filter {
        let filter = Filter::parse(text, req.resource)?;
        if let Some(why) = &filter.advanced {
            if !advanced_ok {
                return Err(GraphError::unsupported_query(format!(
                    "{why} is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information"
                )));
            }
        }
        items.retain(|i| filter.matches(&i.obj));
    }
    let mut by_offset = false;
    if let Some(order) = &q.orderby {
        if q.filter.is_some() && !advanced_ok {
            return Err(GraphError::unsupported_query(
                "Sorting not supported for current query.",
            ));
        }
        let mut parts = order.split_whitespace();
        let prop = parts.next().unwrap_or_default().to_string();
        let desc = parts.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
        let allowed = ["displayName", "createdDateTime", "id", "appId"];
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&prop)) {
            return Err(GraphError::unsupported_query(format!(
                "Sorting on property '{prop}' is not supported."
            )));
        }
        items.sort_by(|a, b| {
            let key = |v: &Value| {
                v.as_object()
                    .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(&prop)))
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or_default()
                    .to_lowercase()
            };
            let o = key(&a.obj).cmp(&key(&b.obj)).then(a.seq.cmp(&b.seq));
            if desc {
                o.reverse()
            } else {
                o
            }
        });
        by_offset = true;
    } else {
        items.sort_by_key(|i| i.seq);
    }
    let total = items.len();
    let size = q.page_size(100)?;
    let start = match &q.skiptoken {
        None => 0,
        Some(tok) => match decode_skiptoken(tok) {
            Some(SkipToken::Offset(n)) if by_offset => n,
            Some(SkipToken::After(seq)) if !by_offset => {
                items.iter().position(|i| i.seq > seq).unwrap_or(total)
            }
            _ => return Err(GraphError::bad_request("Invalid $skiptoken value.")),
        },
    };
    let page: Vec<&Item> = items.iter().skip(start).take(size).collect();
    let more = start + page.len() < total;
    let mut values = Vec::with_capacity(page.len());
    for i in &page {
        values.push(match &q.select {
            Some(names) => select(&i.obj, names, req.keep, req.type_name)?,
            None => i.obj.clone(),
        });
    }
    let mut out = Map::new();
    out.insert("@odata.context".into(), req.context.clone().into());
    if advanced_ok && q.skiptoken.is_none() {
        out.insert("@odata.count".into(), total.into());
    }
    out.insert("value".into(), Value::Array(values));
    if more {
        let token = if by_offset {
            SkipToken::Offset(start + page.len())
        } else {
            SkipToken::After(page.last().map(|i| i.seq).unwrap_or(0))
        };
        let mut pairs = q.without_tokens();
        pairs.push(("$skiptoken".into(), encode_skiptoken(token)));
        out.insert("@odata.nextLink".into(), link(&req.self_url, &pairs).into());
    }
    Ok(Value::Object(out))
}

/// `GET /applications/$count`: text/plain; needs `ConsistencyLevel: eventual` (§3.6).
pub(crate) fn count(
    items: Vec<Item>,
    q: &Query,
    eventual: bool,
    res: &ResourceInfo,
) -> Result<usize, GraphError> {
    if !eventual {
        return Err(GraphError::bad_request("$count is not currently supported."));
    }
    let mut items = items;
    if let Some(text) = &q.filter {
        let f = Filter::parse(text, res)?;
        items.retain(|i| f.matches(&i.obj));
    }
    if let Some(search) = &q.search {
        let clauses = parse_search(search)?;
        items.retain(|i| search_matches(&clauses, &i.obj));
    }
    Ok(items.len())
}

enum SkipToken {
    After(u64),
    Offset(usize),
}

fn encode_skiptoken(t: SkipToken) -> String {
    let raw = match t {
        SkipToken::After(s) => format!("after:{s}"),
        SkipToken::Offset(n) => format!("offset:{n}"),
    };
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_skiptoken(t: &str) -> Option<SkipToken> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(t).ok()?).ok()?;
    let (kind, n) = raw.split_once(':')?;
    match kind {
        "after" => n.parse().ok().map(SkipToken::After),
        "offset" => n.parse().ok().map(SkipToken::Offset),
        _ => None,
    }
}

/// `$search="displayName:web" [AND|OR "description:x"]`: each clause matches when the
/// property contains the term (case-insensitive). Graph tokenizes; containment is close.
fn parse_search(s: &str) -> Result<Vec<(bool, String, String)>, GraphError> {
    let bad = || GraphError::bad_request(format!("Invalid $search value: {s}"));
    let mut out = Vec::new();
    let mut rest = s.trim();
    let mut is_or = false;
    loop {
        let r = rest.strip_prefix('"').ok_or_else(bad)?;
        let end = r.find('"').ok_or_else(bad)?;
        let (prop, term) = r[..end].split_once(':').ok_or_else(bad)?;
        out.push((is_or, prop.trim().to_string(), term.trim().to_lowercase()));
        rest = r[end + 1..].trim();
        if rest.is_empty() {
            break;
        }
        let (op, tail) = rest.split_once(char::is_whitespace).ok_or_else(bad)?;
        is_or = match op.to_ascii_uppercase().as_str() {
            "OR" => true,
            "AND" => false,
            _ => return Err(bad()),
        };
        rest = tail.trim();
    }
    Ok(out)
}

fn search_matches(clauses: &[(bool, String, String)], obj: &Value) -> bool {
    let mut result = true;
    for (i, (is_or, prop, term)) in clauses.iter().enumerate() {
        let v = resolve(std::slice::from_ref(prop), obj, &[])
            .and_then(Value::as_str)
            .is_some_and(|s| s.to_lowercase().contains(term.as_str()));
        result = if i == 0 {
            v
        } else if *is_or {
            result || v
        } else {
            result && v
        };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, tags: &[&str]) -> Value {
        json!({"id": "1", "appId": "a", "displayName": name, "tags": tags, "description": "hello world",
               "createdDateTime": "2024-05-01T00:00:00Z",
               "web": {"redirectUris": ["https://x/cb"]},
               "federatedIdentityCredentials": [{"subject": "system:serviceaccount:ns:sa"}]})
    }

    fn f(s: &str) -> Filter {
        Filter::parse(s, &APPLICATION).unwrap()
    }

    #[test]
    fn basic_filters_need_no_advanced_headers() {
        for s in [
            "tags/any(t:t eq 'k8s')",
            "startswith(displayName,'ns1')",
            "startsWith(displayName, 'ns1')",
            "appId eq 'a'",
            "appId in ('a','b')",
            "createdDateTime ge 2024-01-01T00:00:00Z",
            "tags/any(t:startswith(t,'ns:'))",
            "displayName eq 'x' and (appId eq 'a' or id eq '1')",
        ] {
            assert_eq!(f(s).advanced, None, "{s}");
        }
    }

    #[test]
    fn advanced_filters_are_detected() {
        for s in [
            "displayName ne 'x'",
            "not(displayName eq 'x')",
            "endswith(displayName,'x')",
            "description eq 'x'",
            "web/redirectUris/any(u:u eq 'x')",
            "federatedIdentityCredentials/any(f:f/subject eq 'x')",
            "tags/$count eq 0",
        ] {
            assert!(f(s).advanced.is_some(), "{s}");
        }
    }

    #[test]
    fn evaluation() {
        let a = app("ns1-Client", &["k8s", "ns:ns1"]);
        assert!(f("tags/any(t:t eq 'k8s')").matches(&a));
        assert!(!f("tags/any(t:t eq 'other')").matches(&a));
        assert!(f("startswith(displayName,'NS1')").matches(&a));
        assert!(f("endswith(displayName,'client')").matches(&a));
        assert!(f("displayName ne 'x' and not(appId eq 'b')").matches(&a));
        assert!(f("createdDateTime ge 2024-01-01T00:00:00Z").matches(&a));
        assert!(!f("createdDateTime le 2024-01-01T00:00:00Z").matches(&a));
        assert!(f("web/redirectUris/any(u:u eq 'https://x/cb')").matches(&a));
        assert!(
            f("federatedIdentityCredentials/any(f:f/subject eq 'system:serviceaccount:ns:sa')").matches(&a)
        );
        assert!(f("tags/$count eq 2").matches(&a));
        assert!(f("id in ('0', '1')").matches(&a));
        assert_eq!(
            f("id eq 'x' or id eq 'y'").ids_only(),
            Some(vec!["x".into(), "y".into()])
        );
    }

    #[test]
    fn unknown_properties_and_syntax_errors_are_400() {
        assert_eq!(
            Filter::parse("bogus eq 'x'", &APPLICATION).unwrap_err().code,
            "Request_UnsupportedQuery"
        );
        assert_eq!(
            Filter::parse("displayName eq", &APPLICATION).unwrap_err().code,
            "Request_BadRequest"
        );
        assert_eq!(
            Filter::parse("displayName eq 'x", &APPLICATION).unwrap_err().code,
            "Request_BadRequest"
        );
    }

    #[test]
    fn search_clauses() {
        let c = parse_search("\"displayName:client\" AND \"description:world\"").unwrap();
        assert!(search_matches(&c, &app("ns1-Client", &[])));
        let c = parse_search("\"displayName:nope\" OR \"description:hello\"").unwrap();
        assert!(search_matches(&c, &app("x", &[])));
    }
}
