//! SQL handling shared by templates and the BI endpoint: placeholders, the guard and the
//! ClickHouse settings no client may set.

pub mod guard;
pub mod lexer;
pub mod placeholders;
pub mod settings;
