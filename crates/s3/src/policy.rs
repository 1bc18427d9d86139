//! Bucket policies (S3 User Guide, "Bucket policies for Amazon S3"; IAM
//! User Guide, "IAM JSON policy elements reference"): the JSON document
//! parsed and checked ([`BucketPolicy::parse`]) and evaluated for one
//! request ([`BucketPolicy::evaluate`]), as pure functions of plain data.
//!
//! What Tessera supports of the grammar: `Version` (`2012-10-17` or
//! `2008-10-17`), `Id`, and `Statement` (one or a list) with `Sid`,
//! `Effect` (`Allow`, `Deny`), `Principal` or `NotPrincipal`, `Action` or `NotAction`,
//! `Resource` or `NotResource`, and `Condition`. Anything else is refused
//! as malformed rather than ignored, so that no policy means less than it
//! says.
//!
//! Principals: Tessera has one account, and an S3 access key is its
//! principal. `"*"` and `{"AWS": "*"}` are everyone, anonymous callers
//! included; `{"AWS": "KEYID"}`, `{"AWS": "arn:aws:iam::ACCOUNT:user/KEYID"}`
//! (any account name: `tessera` reads well) and `{"CanonicalUser": "KEYID"}`
//! name one access key by its id; an account (`arn:aws:iam::ACCOUNT:root`
//! or a 12-digit id) is every signed key. `NotPrincipal` is everyone but
//! the principals it names.
//!
//! Conditions: the operators `StringEquals`, `StringNotEquals`,
//! `StringEqualsIgnoreCase`, `StringNotEqualsIgnoreCase`, `StringLike`,
//! `StringNotLike`, `IpAddress`, `NotIpAddress` (CIDR or plain addresses,
//! checked when the policy is put), `Bool` and `Null`, each also with
//! `IfExists`; keys compare without regard to case. The gateway supplies
//! `aws:SourceIp`, `aws:SecureTransport`, `aws:PrincipalType`,
//! `aws:username`, `aws:userid`, `s3:prefix`, `s3:delimiter`,
//! `s3:max-keys` and `s3:ExistingObjectTag/<key>` where they apply; a key
//! the request does not have is absent, which fails every operator but the
//! negated ones, `Null` and `...IfExists` (as IAM evaluates them).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// Why a policy document is refused (S3: `MalformedPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn malformed<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

/// What a statement does when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// Who a statement is about: everyone, or access keys by id and, for an
/// account principal, every signed key (Tessera is one account).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    Anyone,
    Named { keys: Vec<String>, every_key: bool },
}

/// Patterns with `*` and `?`, or their complement (`NotAction`,
/// `NotResource`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Patterns {
    patterns: Vec<String>,
    negated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Ip(Vec<IpNet>),
    Bool,
    Null,
}

/// One condition: `key` (lower-cased) tested against `values`, any of
/// which may match; `negated` for the `Not` operators.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    test: Test,
    negated: bool,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principal: Principal,
    /// `NotPrincipal`: everyone but the principal.
    principal_negated: bool,
    actions: Patterns,
    resources: Patterns,
    conditions: Vec<Condition>,
}

/// A checked bucket policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPolicy {
    statements: Vec<Statement>,
}

/// What the statements that apply to a request say, explicit Deny first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDecision {
    /// A Deny statement applies: refused, whatever else allows it.
    Deny,
    /// An Allow statement applies and no Deny does.
    Allow,
    /// No statement applies.
    NoOpinion,
}

/// One request as a policy sees it.
#[derive(Debug, Clone, Default)]
pub struct PolicyRequest {
    /// The access key id; `None` for an anonymous (unsigned) request.
    pub principal: Option<String>,
    /// The S3 action, e.g. `s3:GetObject`.
    pub action: String,
    /// `arn:aws:s3:::BUCKET` or `arn:aws:s3:::BUCKET/KEY`.
    pub resource: String,
    /// Condition keys, lower-cased, with their values.
    pub context: BTreeMap<String, Vec<String>>,
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters and `?` for one (IAM's wildcards in actions, resources and
/// `StringLike`).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it now covers to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A JSON value that is one item or a list of them, as strings (IAM lets
/// most elements be either; condition values may be booleans or numbers).
fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => malformed(format!("{what} must be a string or a list of strings")),
    };
    match v {
        Value::Array(items) if items.is_empty() => malformed(format!("{what} is empty")),
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

const ARN_PREFIX: &str = "arn:aws:s3:::";

fn principal(v: &Value) -> Result<Principal, PolicyError> {
    let invalid = || malformed("Invalid principal in policy");
    match v {
        Value::String(s) if s == "*" => Ok(Principal::Anyone),
        Value::Object(map) if !map.is_empty() => {
            let (mut keys, mut every_key) = (Vec::new(), false);
            for (kind, ids) in map {
                if kind != "AWS" && kind != "CanonicalUser" {
                    return invalid();
                }
                for id in strings(ids, "Principal")? {
                    if id == "*" {
                        return Ok(Principal::Anyone);
                    }
                    match key_of_principal(&id) {
                        Some(PrincipalName::Key(k)) => keys.push(k),
                        Some(PrincipalName::Account) => every_key = true,
                        None => return malformed(format!("Invalid principal in policy: {id}")),
                    }
                }
            }
            Ok(Principal::Named { keys, every_key })
        }
        _ => invalid(),
    }
}

/// What an `AWS` principal names.
enum PrincipalName {
    /// One access key, by id.
    Key(String),
    /// An account: every signed key of the cluster.
    Account,
}

/// What a principal names: a key by its id or by
/// `arn:aws:iam::ACCOUNT:user/KEYID`, or the account (`arn:aws:iam::ACCOUNT:root`
/// or a 12-digit account id); `None` for anything else.
fn key_of_principal(id: &str) -> Option<PrincipalName> {
    let is_id = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    };
    if let Some(rest) = id.strip_prefix("arn:aws:iam::") {
        if rest.strip_suffix(":root").is_some_and(|a| !a.contains(':')) {
            return Some(PrincipalName::Account);
        }
        let (_, user) = rest.split_once(":user/")?;
        return is_id(user).then(|| PrincipalName::Key(user.to_string()));
    }
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        return Some(PrincipalName::Account);
    }
    is_id(id).then(|| PrincipalName::Key(id.to_string()))
}

fn patterns(
    stmt: &serde_json::Map<String, Value>,
    name: &str,
    not_name: &str,
) -> Result<Patterns, PolicyError> {
    match (stmt.get(name), stmt.get(not_name)) {
        (Some(v), None) => Ok(Patterns {
            patterns: strings(v, name)?,
            negated: false,
        }),
        (None, Some(v)) => Ok(Patterns {
            patterns: strings(v, not_name)?,
            negated: true,
        }),
        (Some(_), Some(_)) => malformed(format!("a statement has both {name} and {not_name}")),
        (None, None) => malformed(format!("Missing required field {name}")),
    }
}

fn conditions(v: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else {
        return malformed("Condition must be an object");
    };
    let mut out = Vec::new();
    for (op, keys) in ops {
        let (base, if_exists) = match op.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (op.as_str(), false),
        };
        let (test, negated) = match base {
            "StringEquals" => (Test::StringEquals, false),
            "StringNotEquals" => (Test::StringEquals, true),
            "StringEqualsIgnoreCase" => (Test::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Test::StringEqualsIgnoreCase, true),
            "StringLike" => (Test::StringLike, false),
            "StringNotLike" => (Test::StringLike, true),
            "IpAddress" => (Test::Ip(Vec::new()), false),
            "NotIpAddress" => (Test::Ip(Vec::new()), true),
            "Bool" => (Test::Bool, false),
            "Null" if !if_exists => (Test::Null, false),
            _ => return malformed(format!("Invalid Condition type : {op}")),
        };
        let Value::Object(keys) = keys else {
            return malformed(format!("Condition {op} must map keys to values"));
        };
        if keys.is_empty() {
            return malformed(format!("Condition {op} names no key"));
        }
        for (key, values) in keys {
            let values = strings(values, "a condition value")?;
            let test = match &test {
                Test::Ip(_) => Test::Ip(
                    values
                        .iter()
                        .map(|v| {
                            v.parse::<IpNet>()
                                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                                .map_err(|_| {
                                    PolicyError(format!("Invalid IP address in condition: {v}"))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Test::Bool | Test::Null => {
                    if let Some(v) = values.iter().find(|v| {
                        !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false")
                    }) {
                        return malformed(format!("{op} takes true or false, not {v}"));
                    }
                    test.clone()
                }
                other => other.clone(),
            };
            out.push(Condition {
                test,
                negated,
                if_exists,
                key: key.to_ascii_lowercase(),
                values,
            });
        }
    }
    Ok(out)
}

fn statement(v: &Value, bucket: &str) -> Result<Statement, PolicyError> {
    let Value::Object(stmt) = v else {
        return malformed("a Statement must be an object");
    };
    const KNOWN: [&str; 9] = [
        "Sid",
        "Effect",
        "Principal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
        "NotPrincipal",
    ];
    if let Some(k) = stmt.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return malformed(format!("Unknown field {k}"));
    }
    if let Some(sid) = stmt.get("Sid")
        && !sid.is_string()
    {
        return malformed("Sid must be a string");
    }
    let effect = match stmt.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => return malformed(format!("Invalid effect: {other}")),
        None => return malformed("Missing required field Effect"),
    };
    let (principal, principal_negated) = match (stmt.get("Principal"), stmt.get("NotPrincipal")) {
        (Some(p), None) => (principal(p)?, false),
        (None, Some(p)) => (principal(p)?, true),
        (Some(_), Some(_)) => return malformed("a statement has both Principal and NotPrincipal"),
        (None, None) => return malformed("Missing required field Principal"),
    };
    let actions = patterns(stmt, "Action", "NotAction")?;
    for a in &actions.patterns {
        let service_ok = a == "*"
            || a.split_once(':')
                .is_some_and(|(svc, name)| svc.eq_ignore_ascii_case("s3") && !name.is_empty());
        if !service_ok {
            return malformed(format!("Policy has invalid action: {a}"));
        }
    }
    // Actions compare without regard to case: kept lower-case once here.
    let actions = Patterns {
        patterns: actions
            .patterns
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect(),
        ..actions
    };
    let resources = patterns(stmt, "Resource", "NotResource")?;
    for r in &resources.patterns {
        // Every resource must lie in this bucket (S3 refuses a policy
        // naming others'), its bucket part perhaps with wildcards.
        let in_bucket = r
            .strip_prefix(ARN_PREFIX)
            .map(|rest| rest.split_once('/').map_or(rest, |(b, _)| b))
            .is_some_and(|b| glob(b, bucket));
        if !in_bucket {
            return malformed(format!("Policy has invalid resource: {r}"));
        }
    }
    let conditions = match stmt.get("Condition") {
        Some(c) => conditions(c)?,
        None => Vec::new(),
    };
    Ok(Statement {
        effect,
        principal,
        principal_negated,
        actions,
        resources,
        conditions,
    })
}

impl Patterns {
    /// `ignore_case` only for patterns kept lower-case (actions).
    fn matches(&self, text: &str, ignore_case: bool) -> bool {
        let any = if ignore_case {
            let text = text.to_ascii_lowercase();
            self.patterns.iter().any(|p| glob(p, &text))
        } else {
            self.patterns.iter().any(|p| glob(p, text))
        };
        any != self.negated
    }
}

impl Condition {
    fn holds(&self, context: &BTreeMap<String, Vec<String>>) -> bool {
        let present = context.get(&self.key).filter(|v| !v.is_empty());
        if let Test::Null = self.test {
            // `Null: true` asks that the key be absent.
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return present.is_none() == want_absent;
        }
        let Some(got) = present else {
            return self.if_exists || self.negated;
        };
        let any = got.iter().any(|g| {
            self.values.iter().any(|want| match &self.test {
                Test::StringEquals => g == want,
                Test::StringEqualsIgnoreCase => g.eq_ignore_ascii_case(want),
                Test::StringLike => glob(want, g),
                Test::Bool => g.eq_ignore_ascii_case(want),
                Test::Ip(nets) => g
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| nets.iter().any(|n| n.contains(&ip))),
                Test::Null => false,
            })
        });
        any != self.negated
    }
}

impl Statement {
    fn applies(&self, req: &PolicyRequest) -> bool {
        let named = match (&self.principal, &req.principal) {
            (Principal::Anyone, _) => true,
            (Principal::Named { keys, every_key }, Some(k)) => {
                *every_key || keys.iter().any(|id| id == k)
            }
            (Principal::Named { .. }, None) => false,
        };
        named != self.principal_negated
            && self.actions.matches(&req.action, true)
            && self.resources.matches(&req.resource, false)
            && self.conditions.iter().all(|c| c.holds(&req.context))
    }

    /// Grants to everyone without a condition that pins the caller down
    /// (S3 User Guide, "The meaning of 'public'": a fixed source address
    /// range or source account/VPC makes a statement not public).
    fn is_public(&self) -> bool {
        const PINNING: [&str; 6] = [
            "aws:sourceip",
            "aws:sourcearn",
            "aws:sourcevpc",
            "aws:sourcevpce",
            "aws:sourceaccount",
            "aws:principalorgid",
        ];
        // Everyone, or everyone but some (NotPrincipal).
        let to_everyone = (self.principal == Principal::Anyone) != self.principal_negated;
        self.effect == Effect::Allow
            && to_everyone
            && !self.conditions.iter().any(|c| {
                !c.negated
                    && PINNING.contains(&c.key.as_str())
                    && match &c.test {
                        Test::Ip(nets) => nets.iter().all(|n| n.prefix_len() > 0),
                        Test::StringEquals | Test::StringEqualsIgnoreCase => true,
                        _ => false,
                    }
            })
    }
}

impl BucketPolicy {
    /// Parses and checks the policy of `bucket`. Errors (S3's
    /// `MalformedPolicy`): not JSON, an unknown element, a missing
    /// Effect, Principal, Action or Resource, an action outside `s3:`, a
    /// resource outside the bucket, an unknown condition operator, a bad
    /// address.
    pub fn parse(text: &str, bucket: &str) -> Result<BucketPolicy, PolicyError> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError(format!("Policies must be valid JSON: {e}")))?;
        let Value::Object(doc) = doc else {
            return malformed("a policy must be a JSON object");
        };
        if let Some(k) = doc
            .keys()
            .find(|k| !["Version", "Id", "Statement"].contains(&k.as_str()))
        {
            return malformed(format!("Unknown field {k}"));
        }
        match doc.get("Version").map(|v| v.as_str()) {
            None | Some(Some("2012-10-17" | "2008-10-17")) => {}
            Some(_) => return malformed("The policy must contain a valid version string"),
        }
        let statements = match doc.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(|s| statement(s, bucket))
                .collect::<Result<_, _>>()?,
            Some(one @ Value::Object(_)) => vec![statement(one, bucket)?],
            _ => return malformed("Missing required field Statement"),
        };
        Ok(BucketPolicy { statements })
    }

    /// What the policy says of `req`: an explicit Deny wins over any
    /// Allow.
    pub fn evaluate(&self, req: &PolicyRequest) -> PolicyDecision {
        let mut decision = PolicyDecision::NoOpinion;
        for s in self.statements.iter().filter(|s| s.applies(req)) {
            match s.effect {
                Effect::Deny => return PolicyDecision::Deny,
                Effect::Allow => decision = PolicyDecision::Allow,
            }
        }
        decision
    }

    /// Whether a condition tests a key starting with `prefix`
    /// (lower-case), e.g. `s3:existingobjecttag/`: such keys cost a look
    /// at the object, made only when a policy needs it.
    pub fn tests_keys_starting(&self, prefix: &str) -> bool {
        self.statements
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.key.starts_with(prefix))
    }

    /// Whether the policy grants anything to everyone (GetBucketPolicyStatus
    /// `IsPublic`; what PublicAccessBlock's `BlockPublicPolicy` refuses and
    /// `RestrictPublicBuckets` makes ineffective).
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(Statement::is_public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(principal: Option<&str>, action: &str, resource: &str) -> PolicyRequest {
        PolicyRequest {
            principal: principal.map(str::to_string),
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }

    fn with(mut r: PolicyRequest, key: &str, value: &str) -> PolicyRequest {
        r.context.insert(key.into(), vec![value.into()]);
        r
    }

    fn parse(doc: serde_json::Value) -> Result<BucketPolicy, PolicyError> {
        BucketPolicy::parse(&doc.to_string(), "bkt")
    }

    use PolicyDecision::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("s3:Get*", "s3:GetObject"));
        assert!(glob("s3:*Object", "s3:GetObject"));
        assert!(glob("s3:*O*t", "s3:GetObject"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("s3:List*", "s3:GetObject"));
        assert!(glob("arn:aws:s3:::bkt/home/*", "arn:aws:s3:::bkt/home/a/b"));
        assert!(!glob("arn:aws:s3:::bkt/home/*", "arn:aws:s3:::bkt/homely"));
        assert!(glob("**a", "a"));
        assert!(glob("a*b*c", "aXXbYYbc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("é?", "éà"));
    }

    #[test]
    fn principals_actions_and_resources() {
        let p = parse(json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                 "Resource": "arn:aws:s3:::bkt/public/*"},
                {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::tessera:user/KEY1", "KEY2"]},
                 "Action": ["s3:List*", "s3:PutObject"],
                 "Resource": ["arn:aws:s3:::bkt", "arn:aws:s3:::bkt/*"]},
                {"Effect": "Allow", "Principal": {"CanonicalUser": "KEY3"},
                 "NotAction": "s3:Delete*", "Resource": "arn:aws:s3:::bkt/*"}
            ]
        }))
        .unwrap();
        let obj = |k: &str| format!("arn:aws:s3:::bkt/{k}");
        assert_eq!(
            p.evaluate(&req(None, "s3:GetObject", &obj("public/a"))),
            Allow
        );
        assert_eq!(
            p.evaluate(&req(Some("ANY"), "s3:GetObject", &obj("public/a"))),
            Allow
        );
        assert_eq!(
            p.evaluate(&req(None, "s3:GetObject", &obj("private/a"))),
            NoOpinion
        );
        assert_eq!(
            p.evaluate(&req(None, "s3:PutObject", &obj("public/a"))),
            NoOpinion
        );
        for key in ["KEY1", "KEY2"] {
            assert_eq!(
                p.evaluate(&req(Some(key), "s3:ListBucket", "arn:aws:s3:::bkt")),
                Allow
            );
            // Actions compare without regard to case.
            assert_eq!(
                p.evaluate(&req(Some(key), "S3:putobject", &obj("x"))),
                Allow
            );
            assert_eq!(
                p.evaluate(&req(Some(key), "s3:DeleteObject", &obj("x"))),
                NoOpinion
            );
        }
        assert_eq!(
            p.evaluate(&req(Some("KEY9"), "s3:ListBucket", "arn:aws:s3:::bkt")),
            NoOpinion
        );
        assert_eq!(
            p.evaluate(&req(None, "s3:ListBucket", "arn:aws:s3:::bkt")),
            NoOpinion
        );
        assert_eq!(
            p.evaluate(&req(Some("KEY3"), "s3:PutObject", &obj("x"))),
            Allow
        );
        assert_eq!(
            p.evaluate(&req(Some("KEY3"), "s3:DeleteObject", &obj("x"))),
            NoOpinion
        );
        // Resources compare with case.
        assert_eq!(
            p.evaluate(&req(None, "s3:GetObject", &obj("PUBLIC/a"))),
            NoOpinion
        );
        assert!(p.is_public());
    }

    #[test]
    fn accounts_and_not_principal() {
        let p = parse(json!({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::tessera:root"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/signed/*"},
            {"Effect": "Allow", "Principal": {"AWS": "123456789012"},
             "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bkt/signed/*"},
            {"Effect": "Deny", "NotPrincipal": {"AWS": "BOSS"},
             "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::bkt/*"}
        ]}))
        .unwrap();
        let obj = "arn:aws:s3:::bkt/signed/a";
        assert_eq!(p.evaluate(&req(Some("ANY"), "s3:GetObject", obj)), Allow);
        assert_eq!(p.evaluate(&req(Some("ANY"), "s3:PutObject", obj)), Allow);
        assert_eq!(p.evaluate(&req(None, "s3:GetObject", obj)), NoOpinion);
        assert_eq!(p.evaluate(&req(Some("ANY"), "s3:DeleteObject", obj)), Deny);
        assert_eq!(p.evaluate(&req(None, "s3:DeleteObject", obj)), Deny);
        assert_eq!(
            p.evaluate(&req(Some("BOSS"), "s3:DeleteObject", obj)),
            NoOpinion
        );
        assert!(!p.is_public());
        let everyone_but = parse(json!({"Statement": {"Effect": "Allow",
            "NotPrincipal": {"AWS": "arn:aws:iam::s3tenant1:root"},
            "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::bkt"}}))
        .unwrap();
        assert!(everyone_but.is_public());
        assert_eq!(
            everyone_but.evaluate(&req(None, "s3:ListBucket", "arn:aws:s3:::bkt")),
            Allow
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = parse(json!({
            "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::bkt/*"},
                {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:GetObject",
                 "Resource": "arn:aws:s3:::bkt/secret/*"}
            ]
        }))
        .unwrap();
        assert_eq!(
            p.evaluate(&req(None, "s3:GetObject", "arn:aws:s3:::bkt/a")),
            Allow
        );
        assert_eq!(
            p.evaluate(&req(None, "s3:GetObject", "arn:aws:s3:::bkt/secret/a")),
            Deny
        );
        assert_eq!(
            p.evaluate(&req(Some("K"), "s3:GetObject", "arn:aws:s3:::bkt/secret/a")),
            Deny
        );
        assert_eq!(
            p.evaluate(&req(Some("K"), "s3:PutObject", "arn:aws:s3:::bkt/secret/a")),
            Allow
        );
    }

    #[test]
    fn conditions_on_address_prefix_and_transport() {
        let p = parse(json!({
            "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
                 "Resource": "arn:aws:s3:::bkt",
                 "Condition": {"StringLike": {"s3:prefix": ["home/", "home/*"]}}},
                {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                 "Resource": "arn:aws:s3:::bkt/*",
                 "Condition": {"IpAddress": {"aws:SourceIp": ["10.1.0.0/16", "192.168.1.7"]}}},
                {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                 "Resource": "arn:aws:s3:::bkt/*",
                 "Condition": {"Bool": {"aws:SecureTransport": false}}},
                {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
                 "Resource": "arn:aws:s3:::bkt/*",
                 "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                               "StringEquals": {"s3:ExistingObjectTag/keep": "yes"}}}
            ]
        }))
        .unwrap();
        let list = req(None, "s3:ListBucket", "arn:aws:s3:::bkt");
        assert_eq!(
            p.evaluate(&with(list.clone(), "s3:prefix", "home/a")),
            Allow
        );
        assert_eq!(p.evaluate(&with(list.clone(), "s3:prefix", "home/")), Allow);
        assert_eq!(
            p.evaluate(&with(list.clone(), "s3:prefix", "other/")),
            NoOpinion
        );
        // No prefix: the key is absent and StringLike fails.
        assert_eq!(p.evaluate(&list), NoOpinion);
        let get = req(None, "s3:GetObject", "arn:aws:s3:::bkt/a");
        assert_eq!(
            p.evaluate(&with(get.clone(), "aws:sourceip", "10.1.200.3")),
            Allow
        );
        assert_eq!(
            p.evaluate(&with(get.clone(), "aws:sourceip", "192.168.1.7")),
            Allow
        );
        assert_eq!(
            p.evaluate(&with(get.clone(), "aws:sourceip", "10.2.0.1")),
            NoOpinion
        );
        assert_eq!(
            p.evaluate(&with(get.clone(), "aws:sourceip", "::1")),
            NoOpinion
        );
        let put = req(Some("K"), "s3:PutObject", "arn:aws:s3:::bkt/a");
        assert_eq!(
            p.evaluate(&with(put.clone(), "aws:securetransport", "false")),
            Deny
        );
        assert_eq!(
            p.evaluate(&with(put.clone(), "aws:securetransport", "true")),
            NoOpinion
        );
        // Both conditions of a statement must hold.
        let del = with(
            req(Some("K"), "s3:DeleteObject", "arn:aws:s3:::bkt/a"),
            "aws:sourceip",
            "10.0.0.1",
        );
        assert_eq!(p.evaluate(&del), NoOpinion);
        assert_eq!(
            p.evaluate(&with(del.clone(), "s3:existingobjecttag/keep", "yes")),
            Deny
        );
        let local = with(del, "aws:sourceip", "127.0.0.1");
        assert_eq!(
            p.evaluate(&with(local, "s3:existingobjecttag/keep", "yes")),
            NoOpinion
        );
        assert!(p.tests_keys_starting("s3:existingobjecttag/"));
        assert!(!p.tests_keys_starting("aws:username"));
        // Every Allow to everyone is pinned or conditioned, but the
        // prefix one does not pin the caller: public.
        assert!(p.is_public());
    }

    #[test]
    fn negated_operators_if_exists_and_null_on_absent_keys() {
        let p = parse(json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/a",
             "Condition": {"StringNotEquals": {"s3:prefix": "x"}}},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/b",
             "Condition": {"StringEqualsIfExists": {"s3:prefix": "x"}}},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/c",
             "Condition": {"Null": {"aws:username": "true"}}}
        ]}))
        .unwrap();
        for k in ["a", "b", "c"] {
            let r = req(None, "s3:GetObject", &format!("arn:aws:s3:::bkt/{k}"));
            assert_eq!(p.evaluate(&r), Allow, "{k}");
        }
        let named = with(
            req(None, "s3:GetObject", "arn:aws:s3:::bkt/c"),
            "aws:username",
            "KEY",
        );
        assert_eq!(p.evaluate(&named), NoOpinion);
        let b = with(
            req(None, "s3:GetObject", "arn:aws:s3:::bkt/b"),
            "s3:prefix",
            "y",
        );
        assert_eq!(p.evaluate(&b), NoOpinion);
        let a = with(
            req(None, "s3:GetObject", "arn:aws:s3:::bkt/a"),
            "s3:prefix",
            "x",
        );
        assert_eq!(p.evaluate(&a), NoOpinion);
    }

    #[test]
    fn public_means_unpinned_allow_to_everyone() {
        let pinned = parse(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/*",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}}))
        .unwrap();
        assert!(!pinned.is_public());
        let everywhere = parse(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/*",
            "Condition": {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}}}))
        .unwrap();
        assert!(everywhere.is_public());
        let one_key = parse(
            json!({"Statement": {"Effect": "Allow", "Principal": {"AWS": "K"},
            "Action": "s3:*", "Resource": "arn:aws:s3:::bkt/*"}}),
        )
        .unwrap();
        assert!(!one_key.is_public());
        let deny = parse(json!({"Statement": {"Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": "arn:aws:s3:::bkt/*"}}))
        .unwrap();
        assert!(!deny.is_public());
    }

    #[test]
    fn malformed_policies_are_refused() {
        let ok = json!({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::bkt/*"});
        assert!(parse(json!({"Statement": [ok.clone()]})).is_ok());
        let with_field = |k: &str, v: serde_json::Value| {
            let mut s = ok.clone();
            if v.is_null() {
                s.as_object_mut().unwrap().remove(k);
            } else {
                s[k] = v;
            }
            json!({"Statement": [s]})
        };
        let bad = [
            json!({"Statement": []}),
            json!({"Version": "2020-01-01", "Statement": [ok.clone()]}),
            json!({"Statement": [ok.clone()], "Extra": 1}),
            json!([ok.clone()]),
            with_field("Effect", json!("Maybe")),
            with_field("Effect", serde_json::Value::Null),
            with_field("Principal", serde_json::Value::Null),
            with_field("Principal", json!("KEY")),
            with_field("Principal", json!({"Service": "s3.amazonaws.com"})),
            with_field("Principal", json!({"AWS": "arn:aws:iam::tessera:role/x"})),
            with_field("Action", json!("ec2:RunInstances")),
            with_field("Action", json!([])),
            with_field("Action", serde_json::Value::Null),
            with_field("NotAction", json!("s3:GetObject")),
            with_field("Resource", json!("arn:aws:s3:::other/*")),
            with_field("Resource", json!("bkt/*")),
            with_field("Resource", serde_json::Value::Null),
            with_field(
                "Condition",
                json!({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}}),
            ),
            with_field(
                "Condition",
                json!({"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}),
            ),
            with_field(
                "Condition",
                json!({"Bool": {"aws:SecureTransport": "maybe"}}),
            ),
            with_field("Condition", json!("x")),
            with_field("NotPrincipal", json!({"AWS": "K"})),
            with_field("Principal", json!({"AWS": "arn:aws:iam::a:b:root"})),
            with_field("Colour", json!("blue")),
        ];
        for doc in bad {
            assert!(parse(doc.clone()).is_err(), "{doc}");
        }
        assert!(BucketPolicy::parse("{not json", "bkt").is_err());
        // A wildcard bucket part that covers the bucket is its own.
        assert!(parse(with_field("Resource", json!("arn:aws:s3:::b*/*"))).is_ok());
    }
}
