//! Recorded market-data frames, as other tools store them (docs/data.md,
//! "Recorded frames"): one frame per line, plain or gzip.
//!
//! - **hftbacktest**: `<local receive time, ns since the epoch> <raw JSON>`.
//!   A stream frame is the combined-stream envelope `{"stream": …, "data": …}`;
//!   a REST depth snapshot is a bare `{"lastUpdateId": …}` line (of the
//!   file's one symbol).
//! - **cryptofeed**: a WebSocket file starts with the URL it subscribed to
//!   (`wss://… <-> <unix seconds>`), then `<unix seconds>: <raw JSON>` per
//!   frame; a REST file holds `<url> -> <unix seconds>: <JSON body>` per
//!   request, the symbol in the URL's `symbol=` parameter.
//!
//! This module only splits lines into a receive time and a JSON text; what
//! the JSON means is [`super::binance`]'s job and what to do with it the
//! importer's ([`super::import`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The tool that wrote a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    Hftbacktest,
    Cryptofeed,
}

/// The longest line accepted. Binance's largest frames (a 5000-level REST
/// snapshot) are ~300 kB; anything past this is not a frame.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// One line of a recording, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedLine<'a> {
    /// A combined-stream frame received at `recv_ns`.
    Stream { recv_ns: i64, json: &'a str },
    /// A REST depth snapshot received at `recv_ns`; `symbol` when the
    /// recording names it (cryptofeed's URL), `None` for the file's own symbol.
    Snapshot { recv_ns: i64, symbol: Option<String>, json: &'a str },
    /// A line that carries no frame (cryptofeed's subscription URL, a blank line).
    Header,
}

/// Splits one line (without its newline). The error says what is wrong with it.
pub fn split_line(format: RecordFormat, line: &str) -> Result<RecordedLine<'_>, String> {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(RecordedLine::Header);
    }
    match format {
        RecordFormat::Hftbacktest => {
            let (time, json) =
                line.split_once(' ').ok_or("expected `<receive time ns> <JSON>`: no space after the time")?;
            let recv_ns: i64 =
                time.parse().map_err(|_| format!("receive time {:?} is not an integer (ns)", clip(time)))?;
            let json = json.trim_start();
            if json.starts_with("{\"lastUpdateId\"") {
                Ok(RecordedLine::Snapshot { recv_ns, symbol: None, json })
            } else {
                Ok(RecordedLine::Stream { recv_ns, json })
            }
        }
        RecordFormat::Cryptofeed => {
            if line.contains(" <-> ") && !line.trim_start().starts_with('{') {
                return Ok(RecordedLine::Header);
            }
            if let Some((url, rest)) = line.split_once(" -> ") {
                let (time, json) = rest.split_once(": ").ok_or("expected `<url> -> <seconds>: <JSON>`")?;
                let symbol =
                    url_symbol(url).ok_or_else(|| format!("REST URL {:?} has no symbol= parameter", clip(url)))?;
                return Ok(RecordedLine::Snapshot { recv_ns: seconds_to_ns(time)?, symbol: Some(symbol), json });
            }
            let (time, json) = line.split_once(": ").ok_or("expected `<seconds>: <JSON>`")?;
            Ok(RecordedLine::Stream { recv_ns: seconds_to_ns(time)?, json })
        }
    }
}

/// The first 60 characters of a text, for error messages about hostile input.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(60) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// `1633998512.0633569` → ns since the epoch, exactly from the decimal digits
/// (a float would lose the last digits).
fn seconds_to_ns(text: &str) -> Result<i64, String> {
    let bad = || format!("receive time {:?} is not decimal seconds", clip(text));
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = whole.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(nanos)).ok_or_else(bad)
}

/// The `symbol=` parameter of a URL, uppercase.
fn url_symbol(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("symbol="))
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|s| s.to_ascii_uppercase())
}

/// Opens a recording for reading line by line: gzip (by its magic bytes,
/// members concatenated as `gzip` appends them) or plain text.
pub fn open_recording(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic)?;
    let file = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(file))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (its newline removed).
    Line,
    /// The line was longer than [`MAX_LINE_BYTES`]; it was skipped to its end.
    TooLong,
    End,
}

/// Reads one line into `buf` (cleared first), never holding more than
/// [`MAX_LINE_BYTES`] of it: a file without newlines cannot exhaust memory.
pub fn read_line_bounded(r: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => LineRead::End,
                (true, true) => LineRead::TooLong,
                (true, false) => LineRead::Line,
            });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(if too_long { LineRead::TooLong } else { LineRead::Line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hftbacktest_lines_split_into_time_and_json() {
        let frame = r#"1723161253937085768 {"stream":"btcusdt@trade","data":{}}"#;
        assert_eq!(
            split_line(RecordFormat::Hftbacktest, frame).unwrap(),
            RecordedLine::Stream { recv_ns: 1723161253937085768, json: r#"{"stream":"btcusdt@trade","data":{}}"# }
        );
        let snap = r#"1723161254206652067 {"lastUpdateId":5,"bids":[],"asks":[]}"#;
        assert!(matches!(
            split_line(RecordFormat::Hftbacktest, snap).unwrap(),
            RecordedLine::Snapshot { recv_ns: 1723161254206652067, symbol: None, .. }
        ));
        let err = split_line(RecordFormat::Hftbacktest, "12x {}").unwrap_err();
        assert!(err.contains("not an integer"), "{err}");
        assert!(split_line(RecordFormat::Hftbacktest, "garbage").is_err());
    }

    #[test]
    fn cryptofeed_lines_keep_every_digit_of_the_time_and_the_rest_symbol() {
        let header = "wss://stream.binance.com:9443/stream?streams=a@depth <-> 1633998511.159679";
        assert_eq!(split_line(RecordFormat::Cryptofeed, header).unwrap(), RecordedLine::Header);
        let frame = r#"1633998512.0633569: {"stream":"x","data":{}}"#;
        assert_eq!(
            split_line(RecordFormat::Cryptofeed, frame).unwrap(),
            RecordedLine::Stream { recv_ns: 1_633_998_512_063_356_900, json: r#"{"stream":"x","data":{}}"# }
        );
        let rest = r#"https://api.binance.com/api/v3/depth?symbol=nknusdt&limit=1000 -> 1633998512.320639: {"lastUpdateId":1}"#;
        assert_eq!(
            split_line(RecordFormat::Cryptofeed, rest).unwrap(),
            RecordedLine::Snapshot {
                recv_ns: 1_633_998_512_320_639_000,
                symbol: Some("NKNUSDT".into()),
                json: r#"{"lastUpdateId":1}"#
            }
        );
        assert!(split_line(RecordFormat::Cryptofeed, "https://x/depth -> 1.0: {}").unwrap_err().contains("symbol="));
        assert!(split_line(RecordFormat::Cryptofeed, "-1.5: {}").is_err());
        assert!(split_line(RecordFormat::Cryptofeed, "99999999999999999999: {}").is_err());
    }

    #[test]
    fn a_line_longer_than_the_bound_is_skipped_whole_and_the_next_one_read() {
        let mut text = vec![b'x'; MAX_LINE_BYTES + 10];
        text.extend_from_slice(b"\nnext\n");
        let mut r: Box<dyn BufRead> = Box::new(BufReader::with_capacity(4096, &text[..]));
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut *r, &mut buf).unwrap(), LineRead::TooLong);
        assert!(buf.len() <= MAX_LINE_BYTES);
        assert_eq!(read_line_bounded(&mut *r, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"next");
        assert_eq!(read_line_bounded(&mut *r, &mut buf).unwrap(), LineRead::End);
    }
}
