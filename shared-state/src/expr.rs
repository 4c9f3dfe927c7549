//! Small integer expressions over a kernel's dims (`ceil_div(n, 256)`,
//! `rows * cols`, `2*m*n*k`), as they appear in kernel declarations: output
//! shapes, GPU launch sizes, scratch buffers, the work a call does.
//!
//! Grammar (whitespace ignored):
//! ```text
//! expr   := term (('+' | '-') term)*
//! term   := factor (('*' | '/' | '%') factor)*        '/' truncates
//! factor := NUMBER | NAME | NAME '(' expr (',' expr)* ')' | '(' expr ')'
//! ```
//! Functions: `ceil_div(a, b)`, `min(a, b, ...)`, `max(a, b, ...)`,
//! `next_pow2(a)`, `log2(a)` (floor). Values are `u64`; overflow, division by
//! zero and a negative result are errors, never wrap-arounds.

use std::collections::BTreeMap;
use std::fmt;

/// Dim values bound for one call: `rows = 512`, `cols = 1024`.
pub type Dims = BTreeMap<String, u64>;

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Num(u64),
    Dim(String),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    CeilDiv,
    Min,
    Max,
    NextPow2,
    Log2,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "ceil_div" => Func::CeilDiv,
            "min" => Func::Min,
            "max" => Func::Max,
            "next_pow2" => Func::NextPow2,
            "log2" => Func::Log2,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Func::CeilDiv => "ceil_div",
            Func::Min => "min",
            Func::Max => "max",
            Func::NextPow2 => "next_pow2",
            Func::Log2 => "log2",
        }
    }

    fn arity_ok(self, n: usize) -> bool {
        match self {
            Func::CeilDiv => n == 2,
            Func::Min | Func::Max => n >= 1,
            Func::NextPow2 | Func::Log2 => n == 1,
        }
    }
}

/// An expression that does not parse, or does not evaluate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError(pub String);

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExprError {}

impl Expr {
    /// Parses `text`; the error names the column and what was expected.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let mut p = Parser {
            text,
            chars: text.char_indices().collect(),
            pos: 0,
        };
        let e = p.expr()?;
        p.skip_ws();
        if p.pos < p.chars.len() {
            return Err(p.error("an operator or the end"));
        }
        Ok(e)
    }

    /// Evaluates with `dims`; an unknown dim or an overflow is an error.
    pub fn eval(&self, dims: &Dims) -> Result<u64, ExprError> {
        let overflow = || ExprError(format!("`{self}` overflows"));
        Ok(match self {
            Expr::Num(n) => *n,
            Expr::Dim(name) => *dims
                .get(name)
                .ok_or_else(|| ExprError(format!("unknown dim `{name}`")))?,
            Expr::Binary(op, a, b) => {
                let (a, b) = (a.eval(dims)?, b.eval(dims)?);
                match op {
                    BinOp::Add => a.checked_add(b).ok_or_else(overflow)?,
                    BinOp::Sub => a
                        .checked_sub(b)
                        .ok_or_else(|| ExprError(format!("`{self}` is negative ({a} - {b})")))?,
                    BinOp::Mul => a.checked_mul(b).ok_or_else(overflow)?,
                    BinOp::Div | BinOp::Rem if b == 0 => {
                        return Err(ExprError(format!("`{self}` divides by zero")));
                    }
                    BinOp::Div => a / b,
                    BinOp::Rem => a % b,
                }
            }
            Expr::Call(func, args) => {
                let v = args
                    .iter()
                    .map(|a| a.eval(dims))
                    .collect::<Result<Vec<_>, _>>()?;
                match func {
                    Func::CeilDiv if v[1] == 0 => {
                        return Err(ExprError(format!("`{self}` divides by zero")));
                    }
                    Func::CeilDiv => v[0].div_ceil(v[1]),
                    Func::Min => *v.iter().min().expect("arity checked"),
                    Func::Max => *v.iter().max().expect("arity checked"),
                    Func::NextPow2 => v[0].checked_next_power_of_two().ok_or_else(overflow)?,
                    Func::Log2 if v[0] == 0 => {
                        return Err(ExprError(format!("`{self}`: log2 of 0")));
                    }
                    Func::Log2 => u64::from(v[0].ilog2()),
                }
            }
        })
    }

    /// The dim names the expression uses, in order of first appearance.
    pub fn dims(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_dims(&mut out);
        out
    }

    fn collect_dims(&self, out: &mut Vec<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Dim(name) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            Expr::Binary(_, a, b) => {
                a.collect_dims(out);
                b.collect_dims(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.collect_dims(out)),
        }
    }

    /// The name if the expression is a bare dim (`n`), which binds the dim
    /// when it appears in an input shape.
    pub fn as_dim(&self) -> Option<&str> {
        match self {
            Expr::Dim(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Dim(name) => f.write_str(name),
            Expr::Binary(op, a, b) => {
                let sym = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Rem => "%",
                };
                let wrap = |e: &Expr, f: &mut fmt::Formatter<'_>| match e {
                    Expr::Binary(..) => write!(f, "({e})"),
                    _ => write!(f, "{e}"),
                };
                wrap(a, f)?;
                write!(f, " {sym} ")?;
                wrap(b, f)
            }
            Expr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].1.is_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn error(&self, expected: &str) -> ExprError {
        let column = self.pos + 1;
        let found = self
            .chars
            .get(self.pos)
            .map_or("the end".to_string(), |&(_, c)| format!("`{c}`"));
        ExprError(format!(
            "in `{}` at column {column}: expected {expected}, found {found}",
            self.text
        ))
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.term()?;
        while let Some(c @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            let op = if c == '+' { BinOp::Add } else { BinOp::Sub };
            left = Expr::Binary(op, Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.factor()?;
        while let Some(c @ ('*' | '/' | '%')) = self.peek() {
            self.pos += 1;
            let op = match c {
                '*' => BinOp::Mul,
                '/' => BinOp::Div,
                _ => BinOp::Rem,
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, ExprError> {
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                let e = self.expr()?;
                if self.peek() != Some(')') {
                    return Err(self.error("`)`"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.chars.len()
                    && (self.chars[self.pos].1.is_ascii_digit() || self.chars[self.pos].1 == '_')
                {
                    self.pos += 1;
                }
                let digits: String = self.chars[start..self.pos]
                    .iter()
                    .map(|&(_, c)| c)
                    .filter(|&c| c != '_')
                    .collect();
                digits.parse().map(Expr::Num).map_err(|_| {
                    self.pos = start;
                    self.error("a number that fits in 64 bits")
                })
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self.pos < self.chars.len()
                    && (self.chars[self.pos].1.is_ascii_alphanumeric()
                        || self.chars[self.pos].1 == '_')
                {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos]
                    .iter()
                    .map(|&(_, c)| c)
                    .collect();
                if self.peek() != Some('(') {
                    return Ok(Expr::Dim(name));
                }
                let Some(func) = Func::from_name(&name) else {
                    self.pos = start;
                    return Err(self.error(
                        "a function: ceil_div, min, max, next_pow2 or log2 (not this name)",
                    ));
                };
                self.pos += 1;
                let mut args = vec![self.expr()?];
                while self.peek() == Some(',') {
                    self.pos += 1;
                    args.push(self.expr()?);
                }
                if self.peek() != Some(')') {
                    return Err(self.error("`,` or `)`"));
                }
                self.pos += 1;
                if !func.arity_ok(args.len()) {
                    return Err(ExprError(format!(
                        "in `{}`: {} does not take {} argument(s)",
                        self.text,
                        func.name(),
                        args.len()
                    )));
                }
                Ok(Expr::Call(func, args))
            }
            _ => Err(self.error("a number, a dim name, a function or `(`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(pairs: &[(&str, u64)]) -> Dims {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn evaluates_with_precedence_and_functions() {
        let d = dims(&[("n", 1000), ("m", 3), ("k", 7)]);
        let eval = |s: &str| Expr::parse(s).unwrap().eval(&d).unwrap();
        assert_eq!(eval("ceil_div(n, 256)"), 4);
        assert_eq!(eval("2*m*k + 1"), 43);
        assert_eq!(eval("(m + k) * 2"), 20);
        assert_eq!(eval("n / 3 % 7"), 333 % 7);
        assert_eq!(eval("max(m, k, 5) - min(m, k)"), 4);
        assert_eq!(eval("next_pow2(n)"), 1024);
        assert_eq!(eval("log2(n)"), 9);
        assert_eq!(eval("1_000"), 1000);
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = Expr::parse("ceil_div(n, )").unwrap_err();
        assert!(e.0.contains("column 13"), "{e}");
        let e = Expr::parse("n +").unwrap_err();
        assert!(e.0.contains("expected a number, a dim name"), "{e}");
        let e = Expr::parse("sqrt(n)").unwrap_err();
        assert!(e.0.contains("a function"), "{e}");
        let e = Expr::parse("ceil_div(n)").unwrap_err();
        assert!(e.0.contains("does not take 1"), "{e}");
        let e = Expr::parse("n n").unwrap_err();
        assert!(e.0.contains("an operator or the end"), "{e}");
        let d = dims(&[("n", 1)]);
        assert!(
            Expr::parse("m")
                .unwrap()
                .eval(&d)
                .unwrap_err()
                .0
                .contains("unknown dim `m`")
        );
        assert!(
            Expr::parse("n - 2")
                .unwrap()
                .eval(&d)
                .unwrap_err()
                .0
                .contains("negative")
        );
        assert!(
            Expr::parse("n / (n - 1)")
                .unwrap()
                .eval(&d)
                .unwrap_err()
                .0
                .contains("zero")
        );
        let big = dims(&[("n", u64::MAX)]);
        assert!(
            Expr::parse("n * 2")
                .unwrap()
                .eval(&big)
                .unwrap_err()
                .0
                .contains("overflows")
        );
    }

    #[test]
    fn displays_back_to_an_equivalent_expression() {
        for s in [
            "ceil_div(n, 256)",
            "2 * (m + k)",
            "rows * cols",
            "max(a, b, 3)",
        ] {
            let e = Expr::parse(s).unwrap();
            assert_eq!(Expr::parse(&e.to_string()).unwrap(), e, "{s} -> {e}");
        }
        assert_eq!(Expr::parse("a*(b+c)").unwrap().dims(), ["a", "b", "c"]);
    }
}
