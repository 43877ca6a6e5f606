//! Segment files: their names (`segment-<first seq, 20 digits>.jsonl`),
//! listing them in order, and reading lines across them in order, as the
//! exporter does.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::line::{self, Mark, SpoolLine};

const PREFIX: &str = "segment-";
const SUFFIX: &str = ".jsonl";

/// The path of the segment in `dir` whose first line is `first_seq`.
pub fn path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{first_seq:020}{SUFFIX}"))
}

/// Segment files of `dir`, in order.
pub fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The seq in a segment's file name (that of its first line).
pub fn first_seq(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The seq and hash of a segment's last whole line.
pub fn last_line(path: &Path) -> std::io::Result<Option<Mark>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.split_inclusive('\n').rev().find_map(|l| {
        let l = line::parse(l).ok()?;
        Some(Mark {
            seq: l.seq,
            hash: l.hash,
        })
    }))
}

/// Reads records in order across segment files, remembering where it is.
pub struct SpoolReader {
    dir: PathBuf,
    seg: Option<PathBuf>,
    offset: u64,
    /// The next sequence number wanted.
    next: u64,
}

impl SpoolReader {
    /// A reader positioned after record `after`.
    pub fn new(dir: &Path, after: u64) -> SpoolReader {
        SpoolReader {
            dir: dir.to_owned(),
            seg: None,
            offset: 0,
            next: after + 1,
        }
    }

    fn locate(&mut self) -> std::io::Result<bool> {
        let segs = segments(&self.dir)?;
        let pick = segs
            .iter()
            .rev()
            .find(|s| first_seq(s).unwrap_or(1) <= self.next)
            .or(segs.first())
            .cloned();
        self.offset = 0;
        self.seg = pick;
        Ok(self.seg.is_some())
    }

    /// Up to `max` complete records with sequence numbers up to `upto`.
    pub fn read(&mut self, max: usize, upto: u64) -> std::io::Result<Vec<SpoolLine>> {
        let mut out = Vec::new();
        if self.next > upto {
            return Ok(out);
        }
        if self.seg.is_none() && !self.locate()? {
            return Ok(out);
        }
        loop {
            let Some(seg) = self.seg.clone() else {
                return Ok(out);
            };
            let mut f = File::open(&seg)?;
            f.seek(SeekFrom::Start(self.offset))?;
            let mut reader = BufReader::new(f);
            let mut raw = String::new();
            loop {
                if out.len() >= max || self.next > upto {
                    return Ok(out);
                }
                raw.clear();
                let n = reader.read_line(&mut raw)?;
                if n == 0 || !raw.ends_with('\n') {
                    break; // end of this segment, or a line still being written
                }
                self.offset += n as u64;
                let Ok(line) = line::parse(&raw) else {
                    tracing::error!(segment = %seg.display(), offset = self.offset, "unreadable spool line skipped by the exporter; run `portcullis audit verify`");
                    continue;
                };
                if line.seq < self.next {
                    continue;
                }
                self.next = line.seq + 1;
                out.push(line);
            }
            // Past this segment's end: move on if a later one exists.
            let later = segments(&self.dir)?.into_iter().find(|s| *s > seg);
            match later {
                Some(next) => {
                    self.seg = Some(next);
                    self.offset = 0;
                }
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_follows_segments_and_stops_at_durable() {
        let dir = std::env::temp_dir().join(format!("pc-reader-{}", crate::secret::random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |seq: u64| {
            format!("{{\"seq\":{seq},\"type\":\"start\",\"prev\":\"x\",\"body\":{{}}}}\th{seq}\n")
        };
        std::fs::write(path(&dir, 1), (1..=3).map(line).collect::<String>()).unwrap();
        std::fs::write(
            path(&dir, 4),
            (4..=6).map(line).collect::<String>() + "{\"seq\":7,",
        )
        .unwrap();
        let mut r = SpoolReader::new(&dir, 2);
        let got: Vec<u64> = r.read(100, 5).unwrap().iter().map(|l| l.seq).collect();
        assert_eq!(got, vec![3, 4, 5]);
        let got: Vec<u64> = r.read(100, 100).unwrap().iter().map(|l| l.seq).collect();
        assert_eq!(got, vec![6], "the torn line is not read");
        let mut r = SpoolReader::new(&dir, 4);
        let got: Vec<u64> = r.read(1, 100).unwrap().iter().map(|l| l.seq).collect();
        assert_eq!(got, vec![5]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
