//! Whether a statement writes: the one question `stall_writes` asks of SQL text.
//!
//! The classifier looks at the first keyword of each statement (after whitespace and comments),
//! and for `WITH` and `EXPLAIN ANALYZE` at the rest of the statement for a data-modifying verb.
//! Keywords it does not know count as writes: a `stall_writes` fault that let an unknown write
//! through would silently not be the fault the scenario asked for, while holding an unknown read
//! only makes the fault a little wider.
//!
//! Known approximations: `SELECT … FOR UPDATE` and PostgreSQL `SELECT … INTO` count as reads;
//! `EXECUTE name` counts as a write, because the statement it runs is not visible here.

/// How much of a statement the classifier reads. A statement whose first keyword is not within
/// this many bytes (a very long leading comment) counts as a write.
pub const CLASSIFY_PREFIX: usize = 16 * 1024;

/// Which SQL dialect's quoting rules to lex with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Dollar quoting, nested block comments, `E'…'` strings with backslash escapes.
    Postgres,
    /// Backslash escapes in strings, backtick identifiers, `#` line comments.
    Mysql,
}

/// Statements whose first keyword makes them reads (or transaction control that does not commit).
const READS: &[&str] = &[
    "ABORT",
    "BEGIN",
    "CLOSE",
    "DEALLOCATE",
    "DECLARE",
    "DESC",
    "DESCRIBE",
    "DISCARD",
    "EXPLAIN",
    "FETCH",
    "HANDLER",
    "HELP",
    "LISTEN",
    "MOVE",
    "PREPARE",
    "RELEASE",
    "RESET",
    "ROLLBACK",
    "SAVEPOINT",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "UNLISTEN",
    "USE",
    "VALUES",
    "WITH",
];

/// Verbs that make a `WITH` or `EXPLAIN ANALYZE` statement modify data.
const MODIFYING: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE"];

/// Whether `sql` (possibly several statements, possibly cut at [`CLASSIFY_PREFIX`]) writes.
/// Never panics, on any bytes.
pub fn is_write(sql: &[u8], dialect: Dialect) -> bool {
    let truncated = sql.len() > CLASSIFY_PREFIX;
    let sql = &sql[..sql.len().min(CLASSIFY_PREFIX)];
    let mut lexer = Lexer {
        s: sql,
        i: 0,
        dialect,
        statement_start: true,
    };
    let mut statement = Statement::default();
    loop {
        let token = lexer.next();
        match token {
            Token::Word(w) => match statement.first {
                None => statement.first = Some(w),
                Some(_) => {
                    statement.analyze |= w.eq_ignore_ascii_case(b"ANALYZE");
                    statement.transaction |= w.eq_ignore_ascii_case(b"TRANSACTION");
                    statement.modifying |= MODIFYING
                        .iter()
                        .any(|m| w.eq_ignore_ascii_case(m.as_bytes()));
                }
            },
            // A parenthesised query, `(SELECT …) UNION …`, starts with its keyword all the same.
            Token::Other(b'(') if statement.first.is_none() => {}
            Token::Other(_) => statement.other_first |= statement.first.is_none(),
            Token::Semicolon => {
                if statement.writes() {
                    return true;
                }
                statement = Statement::default();
            }
            Token::End => {
                // A cut-off prefix without a keyword in its last statement: unknown, so a write.
                return statement.writes() || (truncated && statement.first.is_none());
            }
        }
    }
}

#[derive(Default)]
struct Statement<'a> {
    first: Option<&'a [u8]>,
    /// Something other than a keyword came before the first keyword.
    other_first: bool,
    analyze: bool,
    transaction: bool,
    modifying: bool,
}

impl Statement<'_> {
    fn writes(&self) -> bool {
        if self.other_first {
            return true;
        }
        let Some(first) = self.first else {
            return false;
        };
        let is = |k: &str| first.eq_ignore_ascii_case(k.as_bytes());
        if !READS.iter().any(|r| is(r)) {
            return true;
        }
        if is("WITH") {
            return self.modifying;
        }
        if is("EXPLAIN") {
            // Only EXPLAIN ANALYZE runs the statement it explains.
            return self.analyze && self.modifying;
        }
        if is("PREPARE") {
            // PREPARE name AS … only prepares; PREPARE TRANSACTION is a two-phase commit.
            return self.transaction;
        }
        false
    }
}

enum Token<'a> {
    Word(&'a [u8]),
    Semicolon,
    /// Anything else, by its first byte.
    Other(u8),
    End,
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    dialect: Dialect,
    statement_start: bool,
}

impl<'a> Lexer<'a> {
    fn peek(&self, off: usize) -> Option<u8> {
        self.s.get(self.i + off).copied()
    }

    fn next(&mut self) -> Token<'a> {
        loop {
            let Some(c) = self.peek(0) else {
                return Token::End;
            };
            let at_start = self.statement_start;
            self.statement_start = false;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                    self.i += 1;
                    self.statement_start = at_start;
                }
                b'-' if self.peek(1) == Some(b'-') => {
                    self.skip_line();
                    self.statement_start = at_start;
                }
                b'#' if self.dialect == Dialect::Mysql => {
                    self.skip_line();
                    self.statement_start = at_start;
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    self.skip_block_comment();
                    self.statement_start = at_start;
                }
                b';' => {
                    self.i += 1;
                    self.statement_start = true;
                    return Token::Semicolon;
                }
                b'\'' => {
                    let backslash = self.dialect == Dialect::Mysql;
                    self.skip_quoted(b'\'', backslash);
                    return Token::Other(c);
                }
                b'"' => {
                    let backslash = self.dialect == Dialect::Mysql;
                    self.skip_quoted(b'"', backslash);
                    return Token::Other(c);
                }
                b'`' if self.dialect == Dialect::Mysql => {
                    self.skip_quoted(b'`', false);
                    return Token::Other(c);
                }
                b'$' if self.dialect == Dialect::Postgres => {
                    self.dollar();
                    return Token::Other(c);
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    // PostgreSQL escape strings: E'…' takes backslash escapes.
                    if (c == b'E' || c == b'e')
                        && self.peek(1) == Some(b'\'')
                        && self.dialect == Dialect::Postgres
                    {
                        self.i += 1;
                        self.skip_quoted(b'\'', true);
                        return Token::Other(b'\'');
                    }
                    let start = self.i;
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
                    {
                        self.i += 1;
                    }
                    return Token::Word(&self.s[start..self.i]);
                }
                _ => {
                    self.i += 1;
                    return Token::Other(c);
                }
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if c == b'\n' {
                break;
            }
        }
    }

    fn skip_block_comment(&mut self) {
        // PostgreSQL nests block comments; MySQL does not, but a nested opener inside a MySQL
        // comment is rare enough that one rule serves both.
        self.i += 2;
        let mut depth = 1usize;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return,
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.i += 2;
                }
                (Some(b'/'), Some(b'*')) if self.dialect == Dialect::Postgres => {
                    depth += 1;
                    self.i += 2;
                }
                _ => self.i += 1,
            }
        }
    }

    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        self.i += 1;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if backslash && c == b'\\' {
                self.i += 1;
            } else if c == quote {
                if self.peek(0) == Some(quote) {
                    self.i += 1;
                } else {
                    return;
                }
            }
        }
        self.i = self.i.min(self.s.len());
    }

    /// `$1` is a parameter; `$tag$…$tag$` (tag possibly empty) is a dollar-quoted string.
    fn dollar(&mut self) {
        let start = self.i;
        self.i += 1;
        while self
            .peek(0)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.i += 1;
        }
        let tag = &self.s[start..self.i];
        let digit_tag = tag.get(1).is_some_and(|c| c.is_ascii_digit());
        if self.peek(0) != Some(b'$') || digit_tag {
            return;
        }
        self.i += 1;
        let tag = &self.s[start..self.i];
        let body = &self.s[self.i..];
        match find(body, tag) {
            Some(at) => self.i += at + tag.len(),
            None => self.i = self.s.len(),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(sql: &str) -> bool {
        is_write(sql.as_bytes(), Dialect::Postgres)
    }
    fn my(sql: &str) -> bool {
        is_write(sql.as_bytes(), Dialect::Mysql)
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT 1",
            "  select * from t where a = 'INSERT'",
            "-- INSERT\nSELECT 1",
            "/* UPDATE /* nested */ */ SELECT 1",
            "BEGIN",
            "ROLLBACK",
            "SET search_path = x",
            "SHOW ALL",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN INSERT INTO t VALUES (1)",
            "PREPARE p AS INSERT INTO t VALUES (1)",
            "SELECT $$ DELETE $$",
            "SELECT $tag$ ; DELETE FROM t $tag$",
            "SELECT $1",
            "",
            "   ",
            ";;",
            "(SELECT 1) UNION (SELECT 2)",
            "/* unterminated comment",
        ] {
            assert!(!pg(sql), "{sql:?} classified as a write");
        }
        for sql in [
            "SELECT 1",
            "# DELETE\nSELECT `delete` FROM t",
            "SELECT 'it\\'s; DELETE'",
        ] {
            assert!(!my(sql), "{sql:?} classified as a write");
        }
    }

    #[test]
    fn writes_stall() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "  update t set a = 1",
            "/* c */ DELETE FROM t",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
            "COMMIT",
            "END",
            "COPY t FROM STDIN",
            "CREATE TABLE t (a int)",
            "ALTER TABLE t ADD b int",
            "DROP TABLE t",
            "TRUNCATE t",
            "LOCK TABLE t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "EXPLAIN ANALYZE UPDATE t SET a = 1",
            "PREPARE TRANSACTION 'x'",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "BEGIN; UPDATE t SET a = 1; COMMIT",
            "EXECUTE p",
            "DO $$ BEGIN END $$",
            "1 + 1",
        ] {
            assert!(pg(sql), "{sql:?} classified as a read");
        }
        for sql in [
            "REPLACE INTO t VALUES (1)",
            "insert into t values ('a\\'; SELECT')",
        ] {
            assert!(my(sql), "{sql:?} classified as a read");
        }
    }

    #[test]
    fn a_cut_off_prefix_without_a_keyword_is_a_write() {
        let mut sql = b"/*".to_vec();
        sql.resize(CLASSIFY_PREFIX + 10, b' ');
        assert!(pg(std::str::from_utf8(&sql).unwrap()));
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for sql in [
            &b"\xff\xfe$"[..],
            b"$",
            b"$a",
            b"'",
            b"E'\\",
            b"/*",
            b"--",
            b"`",
            b"\"\\",
        ] {
            let _ = is_write(sql, Dialect::Postgres);
            let _ = is_write(sql, Dialect::Mysql);
        }
    }
}
