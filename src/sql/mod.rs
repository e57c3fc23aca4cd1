//! SQL handling shared by templates and the BI endpoint: placeholders and the guard.

pub mod guard;
pub mod lexer;
pub mod placeholders;
