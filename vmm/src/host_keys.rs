//! The guest's SSH host public keys, as it prints them on its serial console.
//!
//! cloud-init (and the `minimal` image) print the host's public keys between two marker lines:
//!
//! ```text
//! -----BEGIN SSH HOST KEY KEYS-----
//! ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… root@web-1
//! -----END SSH HOST KEY KEYS-----
//! ```
//! The console is the one channel from the guest that nothing on the network can forge, so keys
//! read here let a client check the guest's identity without trusting it on first use. Only the
//! public keys are printed; private keys never leave the guest.
//!
//! [`HostKeyScanner`] is fed console output in arbitrary chunks and yields each complete block.
//! Its memory is bounded whatever the guest prints: a line longer than [`MAX_LINE`] is dropped,
//! and a block keeps at most [`MAX_KEYS`] keys.
//!
//! The kernel writes its own messages straight to the serial port, between any two bytes of what
//! a process is printing: on a busy host (a stall or clocksource warning) a key line arrives cut
//! in two around one or more kernel lines:
//!
//! ```text
//! ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC1v9Dbr[  95.120374] clocksource: timekeeping watchdog …
//! [  95.120411] clocksource: 'hpet' wd_nsec: 511 …
//! FkiMgsAZDA3xJ2lrpfau5HJBKxrxaRX3JKFk root@deb-1
//! ```
//! The scanner keeps the start of a line cut by a kernel timestamp, skips the kernel lines that
//! follow and joins it with the next line. A joined key counts only when its blob decodes to a
//! whole key of its own type, so a wrong join is never taken for a key.

/// First line of a block.
pub const BEGIN_MARKER: &str = "-----BEGIN SSH HOST KEY KEYS-----";
/// Last line of a block.
pub const END_MARKER: &str = "-----END SSH HOST KEY KEYS-----";
/// Longest console line considered (an RSA-16384 public key fits).
pub const MAX_LINE: usize = 16 * 1024;
/// Most keys taken from one block.
pub const MAX_KEYS: usize = 16;

/// Finds host-key blocks in a stream of console output.
#[derive(Debug, Default)]
pub struct HostKeyScanner {
    line: Vec<u8>,
    overlong: bool,
    block: Option<Vec<String>>,
    /// The start of a line a kernel message cut short, waiting for its end.
    cut: String,
}

impl HostKeyScanner {
    /// Feeds output; returns the key lists of the blocks that ended in it, oldest first. Each
    /// key is `<type> <base64>` (the comment dropped).
    pub fn feed(&mut self, data: &[u8]) -> Vec<Vec<String>> {
        let mut done = Vec::new();
        for &b in data {
            if b == b'\n' {
                if !self.overlong {
                    let line = std::mem::take(&mut self.line);
                    if let Some(keys) = self.line_end(&String::from_utf8_lossy(&line)) {
                        done.push(keys);
                    }
                }
                self.line.clear();
                self.overlong = false;
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
        done
    }

    fn line_end(&mut self, raw: &str) -> Option<Vec<String>> {
        let blank = |c: char| c.is_whitespace() || c == '\0';
        let line = raw.trim_matches(blank);
        let cut = std::mem::take(&mut self.cut);
        // The rest of a cut line keeps its leading space: the cut may have fallen on one.
        let joined = (!cut.is_empty()).then(|| format!("{cut}{}", raw.trim_end_matches(blank)));
        match self.take_line(line).or_else(|| joined.as_deref().and_then(|j| self.take_line(j))) {
            Some(Taken::BlockEnd(keys)) => return keys,
            Some(Taken::Other) => return None,
            None => {}
        }
        // Neither whole nor joined: remember the start of a line a kernel message cut here.
        match kernel_stamp_at(line) {
            Some(0) => self.cut = cut, // a kernel line between the two parts
            Some(at) => {
                let continues = if line.starts_with('[') { String::new() } else { cut };
                self.cut = format!("{continues}{}", &line[..at]);
                if self.cut.len() > MAX_LINE {
                    self.cut.clear();
                }
            }
            None => {}
        }
        None
    }

    /// Takes `line` as a marker or a key of the open block; `None` when it is neither.
    fn take_line(&mut self, line: &str) -> Option<Taken> {
        if line.ends_with(BEGIN_MARKER) {
            self.block = Some(Vec::new());
            return Some(Taken::Other);
        }
        if line.ends_with(END_MARKER) {
            return Some(Taken::BlockEnd(self.block.take().filter(|keys| !keys.is_empty())));
        }
        let keys = self.block.as_mut()?;
        let key = parse_key_line(line)?;
        if keys.len() < MAX_KEYS && !keys.contains(&key) {
            keys.push(key);
        }
        Some(Taken::Other)
    }
}

/// What [`HostKeyScanner::take_line`] made of a line.
enum Taken {
    /// An end marker, with the block's keys if it had any.
    BlockEnd(Option<Vec<String>>),
    /// A begin marker or a key.
    Other,
}

/// Where a kernel log timestamp (`[   95.120374]`) starts in `line`, if it holds one.
fn kernel_stamp_at(line: &str) -> Option<usize> {
    line.match_indices('[').map(|(at, _)| at).find(|&at| {
        let rest = line[at + 1..].trim_start_matches(' ');
        let Some((secs, tail)) = rest.split_once('.') else { return false };
        let Some((micros, _)) = tail.split_once(']') else { return false };
        !secs.is_empty()
            && !micros.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && micros.bytes().all(|b| b.is_ascii_digit())
    })
}

/// `<type> <base64>` of one console line holding a public key (anything else: `None`). The key
/// may follow a prefix: cloud-init's lines reach the console directly or through the journal
/// (`[   35.12] cloud-init[400]: ssh-ed25519 AAAA… root@web-1`).
fn parse_key_line(line: &str) -> Option<String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields.windows(2).find_map(|pair| {
        let key = format!("{} {}", pair[0], pair[1]);
        (crate::config_drive::validate_ssh_key(&key) && well_formed(pair[0], pair[1])).then_some(key)
    })
}

/// True when `blob` is base64 of an SSH key blob of type `kind`: length-prefixed fields that add
/// up exactly, the first naming `kind` (so a line cut short or run into other output is no key).
fn well_formed(kind: &str, blob: &str) -> bool {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(blob) else { return false };
    let mut rest = bytes.as_slice();
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else { return false };
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return false;
        }
        fields.push(&tail[..len]);
        rest = &tail[len..];
    }
    fields.len() >= 2 && fields[0] == kind.as_bytes()
}

/// The keys of the last complete block in `text` (e.g. a console log), if any.
pub fn last_block(text: &[u8]) -> Option<Vec<String>> {
    let mut scanner = HostKeyScanner::default();
    scanner.feed(text).pop()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMo2cAuH0peQsTXfAvGoo5dpu6+bo5V0EOLqa4W2aD1";
    const EC: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WeluZ/DuRWKdVc=";

    #[test]
    fn finds_blocks_across_chunks_and_noise() {
        let text = format!(
            "[  3.1] random kernel line\r\n{BEGIN_MARKER}\r\n{ED} root@web-1\r\n[ 3.2] interleaved\r\n{EC} root@web-1\r\n{END_MARKER}\r\nlogin: "
        );
        let mut s = HostKeyScanner::default();
        let mut found = Vec::new();
        for chunk in text.as_bytes().chunks(7) {
            found.extend(s.feed(chunk));
        }
        assert_eq!(found, vec![vec![ED.to_owned(), EC.to_owned()]]);
        assert_eq!(last_block(text.as_bytes()), Some(vec![ED.to_owned(), EC.to_owned()]));
    }

    #[test]
    fn keys_forwarded_through_the_journal_keep_their_prefix() {
        let text = format!(
            "[   35.1] cloud-init[400]: {BEGIN_MARKER}\n[   35.2] cloud-init[400]: {ED} root@deb-1\n\
             [   35.3] cloud-init[400]: {EC} root@deb-1\n[   35.4] cloud-init[400]: {END_MARKER}\n"
        );
        assert_eq!(last_block(text.as_bytes()), Some(vec![ED.to_owned(), EC.to_owned()]));
    }

    #[test]
    fn the_last_block_wins_and_empty_or_open_blocks_do_not_count() {
        let other = EC;
        let text = format!(
            "{BEGIN_MARKER}\n{END_MARKER}\n{BEGIN_MARKER}\n{ED}\n{END_MARKER}\n{BEGIN_MARKER}\n{other}\n{END_MARKER}\n{BEGIN_MARKER}\n{ED}\n"
        );
        assert_eq!(last_block(text.as_bytes()), Some(vec![other.to_owned()]));
        assert_eq!(last_block(b"no keys here\n"), None);
    }

    #[test]
    fn a_key_cut_short_or_run_into_other_output_is_not_a_key() {
        let (kind, blob) = ED.split_once(' ').unwrap();
        let cut = format!("{kind} {}", &blob[..blob.len() - 8]);
        let text = format!("{BEGIN_MARKER}\n{cut}\n{END_MARKER}\n{BEGIN_MARKER}\n{ED}AAAA\n{END_MARKER}\n");
        assert_eq!(last_block(text.as_bytes()), None);
        assert!(well_formed(kind, blob));
        assert!(!well_formed("ssh-rsa", blob), "the blob names its own type");
    }

    #[test]
    fn a_key_line_cut_by_kernel_messages_is_joined_again() {
        let (kind, blob) = ED.split_once(' ').unwrap();
        let (head, tail) = blob.split_at(20);
        let text = format!(
            "deb-1 login: [   33.5] cloud-init[329]: running 'modules:final'\r\n\
             -----BEGIN SSH HOST[  95.120374] rcu: INFO: rcu_sched self-detected stall on CPU\r\n\
             \x20KEY KEYS-----\r\n\
             {kind} {head}[  95.120374] clocksource: timekeeping watchdog on CPU0: Marking clocksource 'tsc' as unstable\r\n\
             [  95.120411] clocksource:   'hpet' wd_nsec: 511 wd_now: 7b3 wd_last: 2c1\r\n\
             {tail} root@deb-1\r\n\
             {EC} root@deb-1\r\n\
             {END_MARKER}\r\n"
        );
        assert_eq!(last_block(text.as_bytes()), Some(vec![ED.to_owned(), EC.to_owned()]));
    }

    #[test]
    fn a_cut_line_joined_with_the_wrong_rest_is_no_key() {
        let (kind, blob) = ED.split_once(' ').unwrap();
        let (head, _) = blob.split_at(20);
        let text = format!(
            "{BEGIN_MARKER}\n{kind} {head}[  95.1] warning\nAAAAIC1v9DbrFkiMgsAZDA3xJ2lrpfau5HJBKxrxaRX3 root@x\n{END_MARKER}\n"
        );
        assert_eq!(last_block(text.as_bytes()), None);
        assert_eq!(kernel_stamp_at("x[  95.120374] y"), Some(1));
        assert_eq!(kernel_stamp_at("[1.2]"), Some(0));
        assert_eq!(kernel_stamp_at("[ . ] [a.1] [1.] no"), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut s = HostKeyScanner::default();
        s.feed(BEGIN_MARKER.as_bytes());
        s.feed(b"\n");
        s.feed(&vec![b'A'; MAX_LINE * 4]);
        assert!(s.line.len() <= MAX_LINE);
        s.feed(b"\n");
        for _ in 0..8 {
            s.feed(format!("{}[ 1.0] kernel\n", "A".repeat(MAX_LINE / 3)).as_bytes());
        }
        assert!(s.cut.len() <= MAX_LINE);
        for i in 0..100u8 {
            use base64::Engine;
            let blob = [&[0, 0, 0, 11][..], b"ssh-ed25519", &[0, 0, 0, 32], &[i; 32]].concat();
            let line = format!("ssh-ed25519 {}\n", base64::engine::general_purpose::STANDARD.encode(blob));
            s.feed(line.as_bytes());
        }
        let found = s.feed(format!("{END_MARKER}\n").as_bytes());
        assert_eq!(found[0].len(), MAX_KEYS);
    }
}
