//! Text to a sqlparser syntax tree, with the pre-checks that protect the stack. Its own file
//! because it runs before any schema is known and must be safe on any input.

use sqlparser::ast;
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::expr::{ExprError, MAX_NESTING, MAX_OPERATORS, MAX_SOURCE_LEN};

/// Parses one expression, rejecting over-long or over-nested input before sqlparser sees it.
pub(crate) fn parse(text: &str) -> Result<ast::Expr, ExprError> {
    if text.len() > MAX_SOURCE_LEN {
        return Err(ExprError::TooComplex {
            message: format!(
                "the expression is {} bytes long; the limit is {MAX_SOURCE_LEN}",
                text.len()
            ),
            line: 1,
            column: 1,
        });
    }
    check_nesting(text)?;
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(parser_error)?;
    let expr = parser.parse_expr().map_err(parser_error)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(ExprError::Parse {
            message: format!(
                "unexpected `{}` after the end of the expression",
                next.token
            ),
            line: next.span.start.line.max(1),
            column: next.span.start.column.max(1),
        });
    }
    Ok(expr)
}

/// Rejects input that would make sqlparser recurse deeper than [`MAX_NESTING`]: brackets,
/// `CASE … END` and runs of prefix operators (`NOT NOT …`, `- - …`) each add a level. The
/// tokenizer is iterative, so this is safe on any input.
fn check_nesting(text: &str) -> Result<(), ExprError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| ExprError::Parse {
            message: e.message,
            line: e.location.line.max(1),
            column: e.location.column.max(1),
        })?;
    let mut depth = 0usize;
    let mut prefix_run = 0usize;
    let mut operators = 0usize;
    for t in &tokens {
        let operator = matches!(
            &t.token,
            Token::Plus
                | Token::Minus
                | Token::Mul
                | Token::Div
                | Token::Mod
                | Token::StringConcat
                | Token::Eq
                | Token::Neq
                | Token::Lt
                | Token::Gt
                | Token::LtEq
                | Token::GtEq
        ) || matches!(
            &t.token,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT)
        );
        if operator {
            operators += 1;
            if operators > MAX_OPERATORS {
                return Err(ExprError::TooComplex {
                    message: format!(
                        "the expression has more than {MAX_OPERATORS} operators; split it up"
                    ),
                    line: t.span.start.line.max(1),
                    column: t.span.start.column.max(1),
                });
            }
        }
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Word(w) if w.keyword == Keyword::CASE => depth += 1,
            Token::Word(w) if w.keyword == Keyword::END => depth = depth.saturating_sub(1),
            _ => {}
        }
        let prefix = matches!(&t.token, Token::Minus | Token::Plus)
            || matches!(&t.token, Token::Word(w) if w.keyword == Keyword::NOT);
        prefix_run = if prefix { prefix_run + 1 } else { 0 };
        if depth + prefix_run > MAX_NESTING {
            return Err(ExprError::TooComplex {
                message: format!(
                    "the expression nests more than {MAX_NESTING} levels deep \
                     (brackets, CASE and prefix operators each add one)"
                ),
                line: t.span.start.line.max(1),
                column: t.span.start.column.max(1),
            });
        }
    }
    Ok(())
}

fn parser_error(e: ParserError) -> ExprError {
    match e {
        ParserError::RecursionLimitExceeded => ExprError::TooComplex {
            message: "the expression is nested too deeply for the parser".into(),
            line: 1,
            column: 1,
        },
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            let (message, line, column) = split_position(&m);
            ExprError::Parse {
                message,
                line,
                column,
            }
        }
    }
}

/// sqlparser appends " at Line: L, Column: C" to its messages; move that into fields.
fn split_position(m: &str) -> (String, u64, u64) {
    if let Some(at) = m.rfind(" at Line: ") {
        let tail = &m[at + " at Line: ".len()..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return (m[..at].to_string(), line, column);
        }
    }
    (m.to_string(), 1, 1)
}
