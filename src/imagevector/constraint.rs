//! Version constraints as Gardener's image vectors write them (`targetVersion`, `runtimeVersion`),
//! in the syntax of the Go semver library Gardener uses: comparisons `=`, `!=`, `>`, `>=`, `<`,
//! `<=`, tilde `~`, caret `^`, wildcards `x`/`X`/`*`, terms joined by commas or spaces (and), and
//! alternatives by `||` (or). Anything else is rejected, never guessed.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version constraint {constraint:?}: {reason}")]
pub struct ConstraintError {
    pub constraint: String,
    pub reason: String,
}

/// A version `major.minor.patch` (a leading `v` and any pre-release or build suffix ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u64, u64, u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let mut next = || -> Option<u64> {
            match parts.next() {
                None => Some(0),
                Some(p) => p.parse().ok(),
            }
        };
        let v = Version(next()?, next()?, next()?);
        parts.next().is_none().then_some(v)
    }
}

/// A version in a constraint: missing or wildcard parts are `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Partial([Option<u64>; 3]);

impl Partial {
    fn parse(s: &str) -> Option<Partial> {
        let core = s.trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        if core.is_empty() {
            return None;
        }
        let mut out = [None; 3];
        let mut wildcard = false;
        for (i, part) in core.split('.').enumerate() {
            if i > 2 {
                return None;
            }
            match part {
                "x" | "X" | "*" => wildcard = true,
                _ if wildcard => return None,
                _ => out[i] = Some(part.parse().ok()?),
            }
        }
        Some(Partial(out))
    }

    /// The lowest version it covers.
    fn floor(self) -> Version {
        Version(self.0[0].unwrap_or(0), self.0[1].unwrap_or(0), self.0[2].unwrap_or(0))
    }

    /// The first version above everything it covers (`None`: no upper bound, `*`).
    fn ceiling(self) -> Option<Version> {
        match self.0 {
            [None, _, _] => None,
            [Some(a), None, _] => Some(Version(a + 1, 0, 0)),
            [Some(a), Some(b), None] => Some(Version(a, b + 1, 0)),
            [Some(a), Some(b), Some(c)] => Some(Version(a, b, c + 1)),
        }
    }

    fn covers(self, v: Version) -> bool {
        v >= self.floor() && self.ceiling().is_none_or(|c| v < c)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    Caret,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Term(Op, Partial);

impl Term {
    fn matches(self, v: Version) -> bool {
        let Term(op, p) = self;
        match op {
            Op::Eq => p.covers(v),
            Op::Ne => !p.covers(v),
            Op::Gt => p.ceiling().is_some_and(|c| v >= c),
            Op::Ge => v >= p.floor(),
            Op::Lt => v < p.floor(),
            Op::Le => p.ceiling().is_none_or(|c| v < c),
            Op::Tilde => {
                let floor = p.floor();
                let ceiling = match p.0 {
                    [Some(a), None, _] => Version(a + 1, 0, 0),
                    _ => Version(floor.0, floor.1 + 1, 0),
                };
                v >= floor && v < ceiling
            }
            Op::Caret => {
                let floor = p.floor();
                let ceiling = match (floor.0, floor.1) {
                    (0, 0) if p.0[2].is_some() => Version(0, 0, floor.2 + 1),
                    (0, m) if p.0[1].is_some() => Version(0, m + 1, 0),
                    (a, _) => Version(a + 1, 0, 0),
                };
                v >= floor && v < ceiling
            }
        }
    }
}

/// A parsed constraint: alternatives of conjunctions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint(Vec<Vec<Term>>);

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, ConstraintError> {
        let err = |reason: &str| ConstraintError {
            constraint: s.to_string(),
            reason: reason.to_string(),
        };
        let mut alternatives = Vec::new();
        for alternative in s.split("||") {
            let mut terms = Vec::new();
            // operators may stand apart from their version (">= 1.30"): glue them first
            let mut pending: Option<&str> = None;
            for token in alternative.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
                let token_op = ["~>", ">=", "<=", "!=", "==", "=", ">", "<", "~", "^"]
                    .into_iter()
                    .find(|o| token.starts_with(o));
                let (op, version) = match (pending.take(), token_op) {
                    (Some(_), Some(_)) => return Err(err("an operator without a version")),
                    (Some(op), None) => (op, token),
                    (None, Some(op)) if token.len() == op.len() => {
                        pending = Some(op);
                        continue;
                    }
                    (None, Some(op)) => (op, &token[op.len()..]),
                    (None, None) => ("", token),
                };
                let op = match op {
                    "" | "=" | "==" => Op::Eq,
                    "!=" => Op::Ne,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    "~" | "~>" => Op::Tilde,
                    _ => Op::Caret,
                };
                let version = Partial::parse(version).ok_or_else(|| err(&format!("{version:?} is not a version")))?;
                terms.push(Term(op, version));
            }
            if pending.is_some() {
                return Err(err("an operator without a version"));
            }
            if terms.is_empty() {
                return Err(err("an empty alternative"));
            }
            alternatives.push(terms);
        }
        Ok(Constraint(alternatives))
    }

    pub fn matches(&self, v: Version) -> bool {
        self.0.iter().any(|terms| terms.iter().all(|t| t.matches(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: &str, v: &str) -> bool {
        Constraint::parse(c).unwrap().matches(Version::parse(v).unwrap())
    }

    #[test]
    fn comparisons_wildcards_and_ranges() {
        assert!(m(">= 1.30", "1.30.0") && m(">= 1.30", "1.33.4") && !m(">= 1.30", "1.29.9"));
        assert!(m(">=1.30, <1.33", "1.32.9") && !m(">=1.30, <1.33", "1.33.0"));
        assert!(m(">= 1.30 < 1.33", "1.31.1"));
        assert!(m("1.33.x", "1.33.4") && !m("1.33.x", "1.34.0"));
        assert!(m("= 1.33", "1.33.7") && !m("= 1.33", "1.32.0"));
        assert!(
            m("1.20.x || >= 1.30", "1.20.3") && m("1.20.x || >= 1.30", "1.31.0") && !m("1.20.x || >= 1.30", "1.25.0")
        );
        assert!(m("~1.33.2", "1.33.9") && !m("~1.33.2", "1.34.0") && !m("~1.33.2", "1.33.1"));
        assert!(m("^1.2", "1.9.0") && !m("^1.2", "2.0.0"));
        assert!(m("> 1.33", "1.34.0") && !m("> 1.33", "1.33.9"));
        assert!(m("<= 1.33", "1.33.9") && !m("<= 1.33", "1.34.0"));
        assert!(m("!= 1.33.1", "1.33.2") && !m("!= 1.33.1", "1.33.1"));
        assert!(m("v1.33.4", "1.33.4") && m("*", "9.9.9"));
        assert!(m(">= 1.30", "v1.33.4-gke.1"));
    }

    #[test]
    fn what_cannot_be_read_is_an_error() {
        for bad in ["", ">=", ">= x1", "1.2.3.4", "1.x.3", "|| 1.2", "=> 1.2", "1.2 - 1.4"] {
            assert!(Constraint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
