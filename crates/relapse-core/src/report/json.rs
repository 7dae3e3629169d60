//! A JSON formatter for the report file: indented like `serde_json`'s pretty printer, except
//! that an array whose first element is a number, string, boolean or null stays on one line.
//! The SLI series (four arrays of up to 72,000 entries for an hour at 50 ms) then costs four
//! lines instead of one per entry, and the rest of the report reads as before.

use std::io::{self, Write};

use serde_json::ser::{CompactFormatter, Formatter};

const INDENT: &[u8] = b"  ";

#[derive(Debug, Default)]
pub struct ScalarArraysInline {
    depth: usize,
    /// One entry per open array: whether it is inline (its first element was a scalar) and
    /// whether it has any element.
    arrays: Vec<(bool, bool)>,
    /// One entry per open object: whether it has any key.
    objects: Vec<bool>,
    /// An array element was announced (`first`) and its first token not seen yet.
    pending: Option<bool>,
}

impl ScalarArraysInline {
    pub fn new() -> ScalarArraysInline {
        ScalarArraysInline::default()
    }

    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.depth {
            w.write_all(INDENT)?;
        }
        Ok(())
    }

    /// Writes what goes before an array element once its kind is known.
    fn before_value<W: ?Sized + Write>(&mut self, w: &mut W, container: bool) -> io::Result<()> {
        let Some(first) = self.pending.take() else {
            return Ok(());
        };
        let Some(top) = self.arrays.last_mut() else {
            return Ok(());
        };
        if first {
            *top = (!container, true);
        } else {
            w.write_all(b",")?;
        }
        if !top.0 {
            self.newline(w)?;
        }
        Ok(())
    }
}

macro_rules! scalar {
    ($($method:ident($t:ty)),* $(,)?) => {
        $(fn $method<W: ?Sized + Write>(&mut self, w: &mut W, value: $t) -> io::Result<()> {
            self.before_value(w, false)?;
            CompactFormatter.$method(w, value)
        })*
    };
}

impl Formatter for ScalarArraysInline {
    scalar!(
        write_bool(bool),
        write_i8(i8),
        write_i16(i16),
        write_i32(i32),
        write_i64(i64),
        write_i128(i128),
        write_u8(u8),
        write_u16(u16),
        write_u32(u32),
        write_u64(u64),
        write_u128(u128),
        write_f32(f32),
        write_f64(f64),
        write_number_str(&str),
    );

    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, false)?;
        w.write_all(b"null")
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, false)?;
        w.write_all(b"\"")
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, true)?;
        self.depth += 1;
        self.arrays.push((true, false));
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        let (inline, any) = self.arrays.pop().unwrap_or((true, false));
        if any && !inline {
            self.newline(w)?;
        }
        w.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, _w: &mut W, first: bool) -> io::Result<()> {
        self.pending = Some(first);
        Ok(())
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, true)?;
        self.depth += 1;
        self.objects.push(false);
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        if self.objects.pop().unwrap_or(false) {
            self.newline(w)?;
        }
        w.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if let Some(any) = self.objects.last_mut() {
            *any = true;
        }
        self.newline(w)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}
