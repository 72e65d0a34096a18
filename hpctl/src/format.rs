//! tracefs description files: an event's `format`, and the ring buffer's
//! `events/header_page` and `events/header_event`.
//!
//! Everything hpctl knows about the binary layout comes from these files;
//! the only constants are the defaults `header_event` has printed since 2.6.

use anyhow::{bail, Context, Result};

/// One `field:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The C type without the name, e.g. `unsigned long`, `__data_loc char[]`, `u64`.
    pub ty: String,
    pub name: String,
    /// `Some(n)` for `name[n]`.
    pub array_len: Option<usize>,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

impl Field {
    pub fn is_data_loc(&self) -> bool {
        self.ty.starts_with("__data_loc")
    }
    pub fn is_rel_loc(&self) -> bool {
        self.ty.starts_with("__rel_loc")
    }
}

/// Parses `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;` (header_page
/// writes `field: TYPE NAME;`, with a space).
pub fn parse_field(line: &str) -> Result<Field> {
    let line = line.trim();
    let rest = line.strip_prefix("field:").with_context(|| format!("not a field line: {line:?}"))?;
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next().unwrap_or_default();
    let (ty, name) = decl.rsplit_once(char::is_whitespace).with_context(|| format!("no field name in {line:?}"))?;
    let (name, array_len) = match name.split_once('[') {
        Some((base, len)) => {
            let len = len.trim_end_matches(']');
            // `char buf[]`: a dynamic array to the end of the record.
            let len = if len.is_empty() {
                0
            } else {
                len.parse().with_context(|| format!("bad array length in {line:?}"))?
            };
            (base, Some(len))
        }
        None => (name, None),
    };
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts.filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':').with_context(|| format!("bad attribute {part:?} in {line:?}"))?;
        let number = || value.trim().parse::<usize>().with_context(|| format!("bad {key} in {line:?}"));
        match key.trim() {
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = number()? != 0,
            _ => {}
        }
    }
    Ok(Field {
        ty: ty.trim().to_string(),
        name: name.to_string(),
        array_len,
        offset: offset.with_context(|| format!("no offset in {line:?}"))?,
        size: size.with_context(|| format!("no size in {line:?}"))?,
        signed,
    })
}

/// An event's `format` file.
#[derive(Clone, Debug)]
pub struct EventFormat {
    pub name: String,
    pub id: u32,
    /// The common_* fields first, then the event's own, as listed.
    pub fields: Vec<Field>,
}

impl EventFormat {
    pub fn parse(text: &str) -> Result<EventFormat> {
        let (mut name, mut id, mut fields) = (None, None, Vec::new());
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("name:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("ID:") {
                id = Some(v.trim().parse().with_context(|| format!("bad ID line {line:?}"))?);
            } else if line.starts_with("field:") {
                fields.push(parse_field(line)?);
            } else if line.starts_with("print fmt:") {
                break;
            }
        }
        Ok(EventFormat {
            name: name.context("format has no name: line")?,
            id: id.context("format has no ID: line")?,
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// `events/header_page`: where the page timestamp, commit and data are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLayout {
    pub timestamp_offset: usize,
    pub timestamp_size: usize,
    pub commit_offset: usize,
    pub commit_size: usize,
    pub data_offset: usize,
    /// Bytes of data in a sub-buffer: the sub-buffer is data_offset + data_size.
    pub data_size: usize,
}

impl PageLayout {
    pub fn parse(text: &str) -> Result<PageLayout> {
        let fields: Vec<Field> =
            text.lines().filter(|l| l.trim().starts_with("field:")).map(parse_field).collect::<Result<_>>()?;
        let get = |name: &str| {
            fields.iter().find(|f| f.name == name).with_context(|| format!("header_page has no {name} field"))
        };
        let (timestamp, commit, data) = (get("timestamp")?, get("commit")?, get("data")?);
        if timestamp.size != 8 || !(commit.size == 4 || commit.size == 8) {
            bail!("unexpected header_page: timestamp {} bytes, commit {} bytes", timestamp.size, commit.size);
        }
        Ok(PageLayout {
            timestamp_offset: timestamp.offset,
            timestamp_size: timestamp.size,
            commit_offset: commit.offset,
            commit_size: commit.size,
            data_offset: data.offset,
            data_size: data.size,
        })
    }

    /// What one read of trace_pipe_raw returns.
    pub fn page_size(&self) -> usize {
        self.data_offset + self.data_size
    }
}

/// `events/header_event`: the 32-bit event header and its special types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderLayout {
    pub type_len_bits: u32,
    pub time_delta_bits: u32,
    pub padding: u32,
    pub time_extend: u32,
    pub time_stamp: u32,
    pub data_max_type_len: u32,
}

impl Default for HeaderLayout {
    /// What every kernel since 2.6.31 prints.
    fn default() -> Self {
        HeaderLayout {
            type_len_bits: 5,
            time_delta_bits: 27,
            padding: 29,
            time_extend: 30,
            time_stamp: 31,
            data_max_type_len: 28,
        }
    }
}

impl HeaderLayout {
    pub fn parse(text: &str) -> Result<HeaderLayout> {
        let mut h = HeaderLayout::default();
        for line in text.lines().map(str::trim) {
            let number = |s: &str| -> Result<u32> {
                let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
                digits.parse().with_context(|| format!("bad header_event line {line:?}"))
            };
            if let Some((key, value)) = line.split_once("==") {
                let key = key.trim();
                let value = number(value)?;
                match key {
                    k if k.starts_with("padding") => h.padding = value,
                    k if k.starts_with("time_extend") => h.time_extend = value,
                    k if k.starts_with("time_stamp") => h.time_stamp = value,
                    k if k.starts_with("data max type_len") => h.data_max_type_len = value,
                    _ => {}
                }
            } else if let Some((key, value)) = line.split_once(':') {
                match key.trim() {
                    "type_len" => h.type_len_bits = number(value)?,
                    "time_delta" => h.time_delta_bits = number(value)?,
                    _ => {}
                }
            }
        }
        if h.type_len_bits + h.time_delta_bits != 32 || h.type_len_bits == 0 {
            bail!("unexpected header_event: type_len {} bits, time_delta {} bits", h.type_len_bits, h.time_delta_bits);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lines() {
        let f = parse_field("\tfield:__data_loc char[] target;\toffset:8;\tsize:4;\tsigned:0;").unwrap();
        assert_eq!(
            (f.ty.as_str(), f.name.as_str(), f.offset, f.size, f.is_data_loc()),
            ("__data_loc char[]", "target", 8, 4, true)
        );
        let f = parse_field("\tfield:u64 args[6];\toffset:40;\tsize:48;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.array_len, f.size), ("args", Some(6), 48));
        let f = parse_field("\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;").unwrap();
        assert_eq!((f.ty.as_str(), f.name.as_str(), f.signed), ("local_t", "commit", true));
        assert!(parse_field("\tfield:int;\toffset:8;").is_err());
    }

    #[test]
    fn header_files() {
        let page = PageLayout::parse(
            "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
             \tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\
             \tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\
             \tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n",
        )
        .unwrap();
        assert_eq!((page.commit_offset, page.commit_size, page.data_offset, page.page_size()), (8, 8, 16, 4096));
        let header = HeaderLayout::parse(
            "# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n\
             \tarray       :   32 bits\n\n\tpadding     : type == 29\n\ttime_extend : type == 30\n\
             \ttime_stamp : type == 31\n\tdata max type_len  == 28\n",
        )
        .unwrap();
        assert_eq!(header, HeaderLayout::default());
    }
}
