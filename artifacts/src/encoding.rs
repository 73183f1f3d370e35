//! The character encoding of a CSV file an office gives (`[data] encoding`).
//!
//! Spreadsheets on Windows save "CSV" in the machine's legacy code page (windows-1252 in
//! Western Europe, windows-1250 in Central Europe…), not in UTF-8. Such a file names its
//! encoding, and every reader of it (the separator sniffing, the CSV reader, the re-read that
//! finds a quote left open) reads it through [`TextEncoding::open`], which turns it into UTF-8
//! as it is read, so the rows' lines and fields are those of the file. A UTF-8 file is read
//! as its bytes, and a row with bytes that are not UTF-8 is reported as such, never guessed
//! at: text in the wrong encoding would train the model on garbled titles without a word.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// A character encoding known by its WHATWG label (`utf-8`, `windows-1252`, `latin1`,
/// `iso-8859-15`, `windows-1250`, `utf-16le`, …).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TextEncoding(&'static encoding_rs::Encoding);

impl TextEncoding {
    /// UTF-8, the default.
    pub const UTF_8: TextEncoding = TextEncoding(encoding_rs::UTF_8);

    /// Whether this is UTF-8 (a file read as its bytes).
    pub fn is_utf8(&self) -> bool {
        *self == Self::UTF_8
    }

    /// Whether this is UTF-16 (little- or big-endian), whose text holds NUL bytes.
    pub fn is_utf16(&self) -> bool {
        self.0 == encoding_rs::UTF_16LE || self.0 == encoding_rs::UTF_16BE
    }

    /// The encoding's canonical name (`UTF-8`; `windows-1252` for `latin1`).
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The file at `path` as UTF-8 text: its bytes for UTF-8, otherwise decoded as it is
    /// read (a byte-order mark, where the file has one, decides between the UTF-16 byte
    /// orders; bytes the encoding does not define become U+FFFD).
    pub fn open(&self, path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
        let file = File::open(path)?;
        Ok(self.reader(file))
    }

    /// `inner` as UTF-8 text, as [`TextEncoding::open`] reads a file.
    pub fn reader<R: Read + Send + 'static>(&self, inner: R) -> Box<dyn Read + Send> {
        if self.is_utf8() {
            return Box::new(inner);
        }
        Box::new(
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(self.0))
                .build(inner),
        )
    }

    /// `bytes` as UTF-8 text: themselves for UTF-8 (checked by the reader), otherwise
    /// decoded (a leading byte-order mark taken off).
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.is_utf8() {
            return std::borrow::Cow::Borrowed(bytes);
        }
        match self.0.decode_with_bom_removal(bytes).0 {
            std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
            std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
        }
    }
}

impl Default for TextEncoding {
    fn default() -> Self {
        Self::UTF_8
    }
}

impl std::fmt::Display for TextEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Debug for TextEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextEncoding({})", self.name())
    }
}

impl std::str::FromStr for TextEncoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match encoding_rs::Encoding::for_label(s.trim().as_bytes()) {
            // A web page may not be read as this "replacement" encoding's every byte; a file
            // must not either.
            Some(e) if e != encoding_rs::REPLACEMENT => Ok(TextEncoding(e)),
            _ => Err(format!(
                "`{s}` is not a character encoding; give the one the file was saved in, such as utf-8, windows-1252 (latin1), iso-8859-15, windows-1250 or utf-16le"
            )),
        }
    }
}

impl serde::Serialize for TextEncoding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for TextEncoding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_encodings_and_an_unknown_one_says_what_to_give() {
        let latin: TextEncoding = "Latin1".parse().unwrap();
        assert_eq!(latin.name(), "windows-1252");
        assert!(!latin.is_utf8());
        assert!("utf8".parse::<TextEncoding>().unwrap().is_utf8());
        assert!("UTF-16".parse::<TextEncoding>().unwrap().is_utf16());
        let e = "klingon".parse::<TextEncoding>().unwrap_err();
        assert!(
            e.starts_with("`klingon` is not a character encoding"),
            "{e}"
        );
        assert!("replacement".parse::<TextEncoding>().is_err());
        let json = serde_json::to_string(&latin).unwrap();
        assert_eq!(json, "\"windows-1252\"");
        assert_eq!(serde_json::from_str::<TextEncoding>(&json).unwrap(), latin);
        assert!(serde_json::from_str::<TextEncoding>("\"nope\"").is_err());
    }

    #[test]
    fn a_legacy_file_is_read_as_utf8_and_a_utf8_one_as_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, b"job_title\nIng\xe9nieur \x80\n").unwrap();
        let mut text = String::new();
        let latin: TextEncoding = "windows-1252".parse().unwrap();
        latin.open(&p).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "job_title\nIngénieur €\n");
        let mut raw = Vec::new();
        TextEncoding::UTF_8
            .open(&p)
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, std::fs::read(&p).unwrap());
        assert_eq!(&*latin.decode(b"\xe9t\xe9"), "été".as_bytes());
        // UTF-16 with its byte-order mark, as a spreadsheet's "Unicode text" export.
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a;é\n".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        std::fs::write(&p, &utf16).unwrap();
        let mut text = String::new();
        "utf-16le"
            .parse::<TextEncoding>()
            .unwrap()
            .open(&p)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a;é\n");
    }
}
