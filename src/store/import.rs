//! Importing events from a file: read it with a size cap (so a device or an endless
//! pipe stops at the cap), then parse the bytes with [`crate::core::import`].

use std::path::Path;

use crate::core::import::{
    CappedReadError, ImportFileError, Imported, MAX_IMPORT_BYTES, import, read_capped_sized,
};

/// Read and import a file; errors name the file. The size cap applies while reading,
/// so a device or an endless pipe (`-e /dev/zero`) stops at the cap instead of
/// filling memory.
pub fn import_file(path: &Path, as_text: bool) -> Result<Imported, ImportFileError> {
    import_file_capped(path, as_text, MAX_IMPORT_BYTES)
}

/// [`import_file`] with a given cap in bytes.
pub fn import_file_capped(
    path: &Path,
    as_text: bool,
    cap: u64,
) -> Result<Imported, ImportFileError> {
    let p = path.display().to_string();
    let io = |source| ImportFileError::Io {
        path: p.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() && meta.len() > cap {
        return Err(ImportFileError::TooLarge {
            path: p,
            size: meta.len(),
            cap,
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let hint = if meta.is_file() { meta.len() } else { 0 };
    let bytes = read_capped_sized(file, cap, hint).map_err(|e| match e {
        CappedReadError::Io(source) => ImportFileError::Io {
            path: p.clone(),
            source,
        },
        CappedReadError::TooLarge => ImportFileError::TooLarge {
            path: p.clone(),
            size: cap + 1,
            cap,
        },
    })?;
    import(&bytes, &p, as_text)
}
