//! The one reader of the text files a user points portmgr at: the service types config
//! (`$PORTMGR_TYPES`, `~/.config/portmgr/types.json`) and import files.
//!
//! A path may name anything: `/dev/zero` (endless), a FIFO (an `open` that blocks until a
//! writer comes), a directory, a file of gigabytes. So the file is opened with
//! `O_NONBLOCK | O_CLOEXEC` (a FIFO cannot block the open), checked with `fstat` (only a
//! regular file is read), and read through [`Read::take`] with a limit of
//! [`TEXT_FILE_MAX`] bytes (a file that grows while it is read is still bounded). The text
//! must be UTF-8; a leading byte order mark is dropped.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The largest types config or import file portmgr reads: 16 MiB.
pub const TEXT_FILE_MAX: u64 = 16 << 20;

/// The UTF-8 byte order mark some editors put at the start of a file.
const BOM: char = '\u{feff}';

/// `text` without a leading UTF-8 byte order mark.
pub(crate) fn strip_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// Read `path` as UTF-8 text: a regular file of at most [`TEXT_FILE_MAX`] bytes (a leading
/// byte order mark dropped). `what` names the file in errors ("the import file").
///
/// Errors: [`Error::InvalidArgument`] for anything but a regular file, a file over the
/// limit and text that is not UTF-8; [`Error::Os`] when it cannot be opened or read (a
/// missing file keeps its `ENOENT`).
pub fn read_text_file(path: &Path, what: &str) -> Result<String> {
    let shown = path.display();
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::os(format!("reading the {what} {shown}"), e))?;
    let md = file.metadata().map_err(|e| Error::os(format!("fstat of {what} {shown}"), e))?;
    let ft = md.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO (named pipe)"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(Error::invalid(format!(
            "{what} {shown} is {kind}, not a regular file: give the path of a regular file{}",
            if what.contains("import") { " (or - for standard input)" } else { "" }
        )));
    }
    if md.len() > TEXT_FILE_MAX {
        return Err(too_big(&format!("{what} {shown}"), Some(md.len())));
    }
    read_text(file, &format!("{what} {shown}"))
}

/// Read `reader` to its end as UTF-8 text, at most [`TEXT_FILE_MAX`] bytes (a leading byte
/// order mark dropped). `what` names the source in errors ("standard input").
pub fn read_text(reader: impl Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    reader.take(TEXT_FILE_MAX + 1).read_to_end(&mut bytes).map_err(|e| Error::os(format!("reading the {what}"), e))?;
    if bytes.len() as u64 > TEXT_FILE_MAX {
        return Err(too_big(what, None));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::invalid(format!(
            "{what} is not UTF-8 text (an invalid byte at line {line}, byte offset {at}): save it as UTF-8"
        ))
    })?;
    Ok(match text.strip_prefix(BOM) {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

fn too_big(what: &str, len: Option<u64>) -> Error {
    let size = len.map(|l| format!(" ({l} bytes)")).unwrap_or_default();
    Error::invalid(format!(
        "{what} is larger than the 16 MiB ({TEXT_FILE_MAX} bytes) portmgr reads{size}: give a smaller file"
    ))
}
