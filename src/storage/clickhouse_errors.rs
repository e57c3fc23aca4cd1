//! ClickHouse's error codes, classified once for every path that runs queries: whose fault a
//! failure is decides its HTTP status. ClickHouse itself answers many request errors with 500
//! (`FINAL` on a table that has no replacing engine, `SAMPLE` without a sampling key, a division by
//! zero); a gateway's callers must see those as their own errors, and keep 5xx for what really is
//! the server's fault. The table is documented in docs/security.md.

/// Whose fault a ClickHouse error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The statement itself cannot run as written: syntax, names, types, clauses the table does not
    /// support. The caller's fault where the caller wrote the SQL (the BI endpoint); a template's
    /// fault (the server's) where a template did.
    Statement,
    /// A value makes the statement fail: a bad parameter or literal, a division by zero, an argument
    /// out of range, `throwIf`. The caller's fault on every path.
    Value,
    /// A table or database that does not exist.
    Missing,
    /// Something the caller may not do (ClickHouse's own access checks, read-only mode).
    Denied,
    /// The result or the rows read exceed a limit of the query.
    TooLarge,
    /// The query ran longer than its `max_execution_time`.
    Timeout,
    /// Another query of the caller's runs with the same id, or the session is busy.
    Conflict,
    /// ClickHouse lacks memory, threads or connections for the query now; worth a retry later.
    Overloaded,
    /// ClickHouse cannot reach a part of itself (a shard, Keeper).
    Unavailable,
}

impl Fault {
    /// The HTTP status a caller gets, where the caller wrote the statement.
    pub fn status(self) -> u16 {
        match self {
            Self::Statement | Self::Value | Self::TooLarge => 400,
            Self::Missing => 404,
            Self::Denied => 403,
            Self::Timeout => 504,
            Self::Conflict => 409,
            Self::Overloaded | Self::Unavailable => 503,
        }
    }
}

/// `(code, ClickHouse's name, fault)`, by code. A code not listed is the server's fault (500).
pub const TABLE: &[(u32, &str, Fault)] = &[
    (1, "UNSUPPORTED_METHOD", Fault::Statement),
    (2, "UNSUPPORTED_PARAMETER", Fault::Statement),
    (6, "CANNOT_PARSE_TEXT", Fault::Value),
    (7, "INCORRECT_NUMBER_OF_COLUMNS", Fault::Statement),
    (8, "THERE_IS_NO_COLUMN", Fault::Statement),
    (16, "NO_SUCH_COLUMN_IN_TABLE", Fault::Statement),
    (20, "NUMBER_OF_COLUMNS_DOESNT_MATCH", Fault::Statement),
    (25, "CANNOT_PARSE_ESCAPE_SEQUENCE", Fault::Value),
    (26, "CANNOT_PARSE_QUOTED_STRING", Fault::Value),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", Fault::Value),
    (32, "ATTEMPT_TO_READ_AFTER_EOF", Fault::Value),
    (34, "TOO_MANY_ARGUMENTS_FOR_FUNCTION", Fault::Statement),
    (35, "TOO_FEW_ARGUMENTS_FOR_FUNCTION", Fault::Statement),
    (36, "BAD_ARGUMENTS", Fault::Value),
    (38, "CANNOT_PARSE_DATE", Fault::Value),
    (41, "CANNOT_PARSE_DATETIME", Fault::Value),
    (42, "NUMBER_OF_ARGUMENTS_DOESNT_MATCH", Fault::Statement),
    (43, "ILLEGAL_TYPE_OF_ARGUMENT", Fault::Statement),
    (44, "ILLEGAL_COLUMN", Fault::Statement),
    (45, "ILLEGAL_NUMBER_OF_RESULT_COLUMNS", Fault::Statement),
    (46, "UNKNOWN_FUNCTION", Fault::Statement),
    (47, "UNKNOWN_IDENTIFIER", Fault::Statement),
    (48, "NOT_IMPLEMENTED", Fault::Statement),
    (50, "UNKNOWN_TYPE", Fault::Statement),
    (51, "EMPTY_LIST_OF_COLUMNS_QUERIED", Fault::Statement),
    (52, "COLUMN_QUERIED_MORE_THAN_ONCE", Fault::Statement),
    (53, "TYPE_MISMATCH", Fault::Statement),
    (59, "ILLEGAL_TYPE_OF_COLUMN_FOR_FILTER", Fault::Statement),
    (60, "UNKNOWN_TABLE", Fault::Missing),
    (62, "SYNTAX_ERROR", Fault::Statement),
    (63, "UNKNOWN_AGGREGATE_FUNCTION", Fault::Statement),
    (64, "CANNOT_READ_AGGREGATE_FUNCTION_FROM_TEXT", Fault::Value),
    (67, "ILLEGAL_KEY_OF_AGGREGATION", Fault::Statement),
    (69, "ARGUMENT_OUT_OF_BOUND", Fault::Value),
    (70, "CANNOT_CONVERT_TYPE", Fault::Value),
    (72, "CANNOT_PARSE_NUMBER", Fault::Value),
    (73, "UNKNOWN_FORMAT", Fault::Statement),
    (80, "INCORRECT_QUERY", Fault::Statement),
    (81, "UNKNOWN_DATABASE", Fault::Missing),
    (115, "UNKNOWN_SETTING", Fault::Statement),
    (117, "INCORRECT_DATA", Fault::Value),
    (125, "INCORRECT_RESULT_OF_SCALAR_SUBQUERY", Fault::Value),
    (127, "ILLEGAL_INDEX", Fault::Statement),
    (128, "TOO_LARGE_ARRAY_SIZE", Fault::Value),
    (130, "CANNOT_READ_ARRAY_FROM_TEXT", Fault::Value),
    (131, "TOO_LARGE_STRING_SIZE", Fault::Value),
    (
        133,
        "AGGREGATE_FUNCTION_DOESNT_ALLOW_PARAMETERS",
        Fault::Statement,
    ),
    (
        134,
        "PARAMETERS_TO_AGGREGATE_FUNCTIONS_MUST_BE_LITERALS",
        Fault::Statement,
    ),
    (135, "ZERO_ARRAY_OR_TUPLE_INDEX", Fault::Value),
    (141, "SAMPLING_NOT_SUPPORTED", Fault::Statement),
    (144, "FIRST_DATE_IS_BIGGER_THAN_LAST_DATE", Fault::Value),
    (145, "UNKNOWN_OVERFLOW_MODE", Fault::Value),
    (146, "QUERY_SECTION_DOESNT_MAKE_SENSE", Fault::Statement),
    (152, "UNKNOWN_DIRECTION_OF_SORTING", Fault::Statement),
    (153, "ILLEGAL_DIVISION", Fault::Value),
    (154, "AGGREGATE_FUNCTION_NOT_APPLICABLE", Fault::Statement),
    (157, "ILLEGAL_OVERFLOW_MODE", Fault::Value),
    (158, "TOO_MANY_ROWS", Fault::TooLarge),
    (159, "TIMEOUT_EXCEEDED", Fault::Timeout),
    (160, "TOO_SLOW", Fault::TooLarge),
    (161, "TOO_MANY_COLUMNS", Fault::Statement),
    (162, "TOO_DEEP_SUBQUERIES", Fault::Statement),
    (163, "TOO_DEEP_PIPELINE", Fault::Statement),
    (164, "READONLY", Fault::Denied),
    (165, "TOO_MANY_TEMPORARY_COLUMNS", Fault::Statement),
    (
        166,
        "TOO_MANY_TEMPORARY_NON_CONST_COLUMNS",
        Fault::Statement,
    ),
    (167, "TOO_DEEP_AST", Fault::Statement),
    (168, "TOO_BIG_AST", Fault::Statement),
    (169, "BAD_TYPE_OF_FIELD", Fault::Value),
    (173, "CANNOT_ALLOCATE_MEMORY", Fault::Overloaded),
    (174, "CYCLIC_ALIASES", Fault::Statement),
    (178, "MULTIPLE_ALIASES_FOR_EXPRESSION", Fault::Statement),
    (179, "MULTIPLE_EXPRESSIONS_FOR_ALIAS", Fault::Statement),
    (181, "ILLEGAL_FINAL", Fault::Statement),
    (182, "ILLEGAL_PREWHERE", Fault::Statement),
    (183, "UNEXPECTED_EXPRESSION", Fault::Statement),
    (184, "ILLEGAL_AGGREGATION", Fault::Statement),
    (186, "UNSUPPORTED_COLLATION_LOCALE", Fault::Value),
    (190, "SIZES_OF_ARRAYS_DONT_MATCH", Fault::Value),
    (191, "SET_SIZE_LIMIT_EXCEEDED", Fault::TooLarge),
    (201, "QUOTA_EXCEEDED", Fault::Overloaded),
    (202, "TOO_MANY_SIMULTANEOUS_QUERIES", Fault::Overloaded),
    (203, "NO_FREE_CONNECTION", Fault::Overloaded),
    (205, "NESTED_TYPE_TOO_DEEP", Fault::Statement),
    (206, "ALIAS_REQUIRED", Fault::Statement),
    (207, "AMBIGUOUS_IDENTIFIER", Fault::Statement),
    (209, "SOCKET_TIMEOUT", Fault::Unavailable),
    (210, "NETWORK_ERROR", Fault::Unavailable),
    (211, "EMPTY_QUERY", Fault::Statement),
    (213, "UNKNOWN_TOTALS_MODE", Fault::Value),
    (215, "NOT_AN_AGGREGATE", Fault::Statement),
    (
        216,
        "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
        Fault::Conflict,
    ),
    (229, "QUERY_IS_TOO_LARGE", Fault::Statement),
    (241, "MEMORY_LIMIT_EXCEEDED", Fault::Overloaded),
    (
        258,
        "UNION_ALL_RESULT_STRUCTURES_MISMATCH",
        Fault::Statement,
    ),
    (264, "INCOMPATIBLE_TYPE_OF_JOIN", Fault::Statement),
    (269, "INFINITE_LOOP", Fault::Statement),
    (279, "ALL_CONNECTION_TRIES_FAILED", Fault::Unavailable),
    (290, "LIMIT_EXCEEDED", Fault::TooLarge),
    (306, "TOO_DEEP_RECURSION", Fault::Statement),
    (307, "TOO_MANY_BYTES", Fault::TooLarge),
    (309, "FUNCTION_CANNOT_HAVE_PARAMETERS", Fault::Statement),
    (321, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", Fault::Value),
    (344, "SUPPORT_IS_DISABLED", Fault::Statement),
    (352, "AMBIGUOUS_COLUMN_NAME", Fault::Statement),
    (
        353,
        "INDEX_OF_POSITIONAL_ARGUMENT_IS_OUT_OF_RANGE",
        Fault::Statement,
    ),
    (356, "BAD_LAMBDA", Fault::Statement),
    (357, "RESERVED_IDENTIFIER_NAME", Fault::Statement),
    (358, "INTO_OUTFILE_NOT_ALLOWED", Fault::Statement),
    (373, "SESSION_IS_LOCKED", Fault::Conflict),
    (376, "CANNOT_PARSE_UUID", Fault::Value),
    (377, "ILLEGAL_SYNTAX_FOR_DATA_TYPE", Fault::Statement),
    (378, "DATA_TYPE_CANNOT_HAVE_ARGUMENTS", Fault::Statement),
    (386, "NO_COMMON_TYPE", Fault::Statement),
    (395, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO", Fault::Value),
    (396, "TOO_MANY_ROWS_OR_BYTES", Fault::TooLarge),
    (399, "FORMAT_IS_NOT_SUITABLE_FOR_OUTPUT", Fault::Statement),
    (403, "INVALID_JOIN_ON_EXPRESSION", Fault::Statement),
    (406, "TOP_AND_LIMIT_TOGETHER", Fault::Statement),
    (407, "DECIMAL_OVERFLOW", Fault::Value),
    (408, "BAD_REQUEST_PARAMETER", Fault::Value),
    (417, "EXPECTED_ALL_OR_ANY", Fault::Statement),
    (418, "UNKNOWN_JOIN", Fault::Statement),
    (427, "CANNOT_COMPILE_REGEXP", Fault::Value),
    (439, "CANNOT_SCHEDULE_TASK", Fault::Overloaded),
    (440, "INVALID_LIMIT_EXPRESSION", Fault::Statement),
    (441, "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", Fault::Value),
    (446, "FUNCTION_NOT_ALLOWED", Fault::Denied),
    (452, "SETTING_CONSTRAINT_VIOLATION", Fault::Statement),
    (456, "UNKNOWN_QUERY_PARAMETER", Fault::Statement),
    (457, "BAD_QUERY_PARAMETER", Fault::Value),
    (467, "CANNOT_PARSE_BOOL", Fault::Value),
    (471, "INVALID_SETTING_VALUE", Fault::Value),
    (472, "READONLY_SETTING", Fault::Denied),
    (475, "INVALID_WITH_FILL_EXPRESSION", Fault::Statement),
    (476, "WITH_TIES_WITHOUT_ORDER_BY", Fault::Statement),
    (490, "CANNOT_FORMAT_DATETIME", Fault::Value),
    (497, "ACCESS_DENIED", Fault::Denied),
    (498, "LIMIT_BY_WITH_TIES_IS_NOT_SUPPORTED", Fault::Statement),
    (503, "AGGREGATE_FUNCTION_THROW", Fault::Value),
    (527, "NO_SUITABLE_FUNCTION_IMPLEMENTATION", Fault::Statement),
    (544, "ROW_AND_ROWS_TOGETHER", Fault::Statement),
    (545, "FIRST_AND_NEXT_TOGETHER", Fault::Statement),
    (691, "UNKNOWN_ELEMENT_OF_ENUM", Fault::Value),
];

/// The fault of a ClickHouse error code; `None`: the server's fault.
pub fn fault(code: u32) -> Option<Fault> {
    TABLE
        .binary_search_by_key(&code, |(c, _, _)| *c)
        .ok()
        .map(|i| TABLE[i].2)
}

/// The ClickHouse error code in an exception's text (`Code: 159. DB::Exception: …`).
pub fn code_in(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The first line of ClickHouse's message, without `Code: N. DB::Exception: ` in front and the
/// server version behind: what a caller is told of a failure that is theirs.
pub fn message_in(text: &str) -> &str {
    let text = text
        .find("DB::Exception: ")
        .map_or(text, |i| &text[i + "DB::Exception: ".len()..]);
    let line = text.lines().next().unwrap_or_default();
    let line = line.find(" (version ").map_or(line, |i| &line[..i]);
    line.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_by_code_without_repeats() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn request_errors_clickhouse_answers_with_500_are_the_callers() {
        for (code, status) in [(181, 400), (141, 400), (73, 400), (216, 409), (153, 400)] {
            assert_eq!(fault(code).map(Fault::status), Some(status), "{code}");
        }
        assert_eq!(fault(49), None, "LOGICAL_ERROR is the server's");
        assert_eq!(fault(159), Some(Fault::Timeout));
    }

    #[test]
    fn the_documented_table_is_this_table() {
        let doc = include_str!("../../docs/security.md");
        for (code, name, _) in TABLE {
            assert!(
                doc.contains(&format!("{code} `{name}`")),
                "docs/security.md does not list {code} {name}"
            );
        }
    }

    #[test]
    fn codes_and_messages_are_read_from_exception_text() {
        let text = "Code: 181. DB::Exception: Storage MergeTree doesn't support FINAL. (ILLEGAL_FINAL) (version 26.9.2.1)\n";
        assert_eq!(code_in(text), Some(181));
        assert_eq!(
            message_in(text),
            "Storage MergeTree doesn't support FINAL. (ILLEGAL_FINAL)"
        );
        assert_eq!(code_in("network error"), None);
    }
}
