//! Client connections whose HTTP/2 `:authority` carries a URL scheme.
//!
//! Given `--endpoints=http://host:port`, etcd's Go client sends `:authority: http://host:port` for
//! some commands (`etcdctl endpoint status`, `endpoint hashkv`, `move-leader`, `defrag`). Go's
//! server accepts it; the HTTP/2 stack Strata serves with refuses such a stream as malformed,
//! because an authority cannot hold a scheme. [`SchemeStrip`] sits between the socket and the
//! HTTP server and drops the scheme from `:authority` in what the client sends.
//!
//! A client that sends a proper authority pays almost nothing: the wrapper looks at the preface and
//! the first header block, and if that block needs no change it steps aside for the rest of the
//! connection. Otherwise it decodes every header block of the connection (HPACK keeps state per
//! connection) and re-encodes each with literals that are never indexed, so the server's decoder
//! table stays empty and in step. HTTP/1.1 connections pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest maximum frame size a peer may set, so every server accepts frames this large.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is left for the server to judge, unchanged.
const MAX_BLOCK: usize = 256 * 1024;
/// Largest HPACK table a client may ask for; HTTP/2 servers advertise 4 KiB by default.
const MAX_TABLE: usize = 64 * 1024;

/// A client connection with the scheme dropped from any HTTP/2 `:authority` the client sends.
pub struct SchemeStrip<S> {
    inner: S,
    filter: Filter,
}

impl<S> SchemeStrip<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, filter: Filter::default() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SchemeStrip<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.filter.ready.is_empty() {
                let n = this.filter.ready.len().min(buf.remaining());
                buf.put_slice(&this.filter.ready[..n]);
                this.filter.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.filter.passes_through() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: whatever is held back goes to the server as it came.
                this.filter.stage = Stage::Through;
            }
            this.filter.pending.extend_from_slice(read.filled());
            this.filter.run();
            if this.filter.ready.is_empty() && read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SchemeStrip<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The pure part: client bytes in (`pending`), bytes for the server out (`ready`).
#[derive(Default)]
struct Filter {
    pending: BytesMut,
    ready: BytesMut,
    stage: Stage,
}

#[derive(Default)]
enum Stage {
    /// Before the HTTP/2 connection preface.
    #[default]
    Preface,
    /// Reading frames. `skip` is what is left of a frame passing through unchanged; `rewriting`
    /// is set once a header block was re-encoded, after which every block must be.
    Frames { decoder: Box<Decoder<'static>>, skip: usize, rewriting: bool },
    /// Everything passes through unchanged.
    Through,
}

impl Filter {
    fn passes_through(&self) -> bool {
        matches!(self.stage, Stage::Through) && self.pending.is_empty()
    }

    /// Moves as much of `pending` to `ready` as can be judged now.
    fn run(&mut self) {
        loop {
            match &mut self.stage {
                Stage::Through => {
                    let rest = self.pending.split();
                    self.ready.unsplit(rest);
                    return;
                }
                Stage::Preface => {
                    let n = self.pending.len().min(PREFACE.len());
                    if self.pending[..n] != PREFACE[..n] {
                        self.stage = Stage::Through;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.ready.extend_from_slice(&self.pending.split_to(n));
                    let mut decoder = Decoder::new();
                    decoder.set_max_allowed_table_size(MAX_TABLE);
                    self.stage =
                        Stage::Frames { decoder: Box::new(decoder), skip: 0, rewriting: false };
                }
                Stage::Frames { skip, .. } if *skip > 0 => {
                    let n = (*skip).min(self.pending.len());
                    if n == 0 {
                        return;
                    }
                    self.ready.extend_from_slice(&self.pending.split_to(n));
                    *skip -= n;
                }
                Stage::Frames { decoder, skip, rewriting } => {
                    if self.pending.len() < FRAME_HEADER {
                        return;
                    }
                    if self.pending[3] != HEADERS {
                        *skip = payload_len(&self.pending);
                        self.ready.extend_from_slice(&self.pending.split_to(FRAME_HEADER));
                        continue;
                    }
                    let end = match block_end(&self.pending) {
                        Block::Complete(end) => end,
                        Block::Partial if self.pending.len() <= MAX_BLOCK => return,
                        Block::Partial | Block::Malformed => {
                            self.stage = Stage::Through;
                            continue;
                        }
                    };
                    let frames = self.pending.split_to(end);
                    match rewrite(decoder, &frames, *rewriting) {
                        Some(out) => {
                            self.ready.extend_from_slice(&out);
                            *rewriting = true;
                        }
                        // Fine as it is, or malformed (the server reports that itself).
                        None => {
                            self.ready.extend_from_slice(&frames);
                            self.stage = Stage::Through;
                        }
                    }
                }
            }
        }
    }
}

fn payload_len(frame: &[u8]) -> usize {
    usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2])
}

enum Block {
    /// The header block (a HEADERS frame and its CONTINUATION frames) ends at this offset.
    Complete(usize),
    Partial,
    Malformed,
}

fn block_end(buf: &[u8]) -> Block {
    let mut at = 0;
    loop {
        if buf.len() < at + FRAME_HEADER {
            return Block::Partial;
        }
        let frame = &buf[at..];
        if at > 0 && frame[3] != CONTINUATION {
            return Block::Malformed;
        }
        let end = at + FRAME_HEADER + payload_len(frame);
        if buf.len() < end {
            return Block::Partial;
        }
        if frame[4] & END_HEADERS != 0 {
            return Block::Complete(end);
        }
        at = end;
    }
}

/// Decodes one header block and, if it must change (or every block must, once one did),
/// re-encodes it without a scheme in `:authority`. `None`: leave it as it is (it needs no
/// change, or it is malformed).
fn rewrite(decoder: &mut Decoder<'static>, frames: &[u8], always: bool) -> Option<Vec<u8>> {
    let (flags, stream, priority, fragment) = split_block(frames)?;
    let headers = decoder.decode(&fragment).ok()?;
    let has_scheme = |(name, value): &(Vec<u8>, Vec<u8>)| {
        name == b":authority" && value.windows(3).any(|w| w == b"://")
    };
    if !always && !headers.iter().any(has_scheme) {
        return None;
    }
    let mut block = Vec::with_capacity(fragment.len() * 2);
    for (name, value) in &headers {
        let value = if name == b":authority" { strip_scheme(value) } else { value };
        // Literal header field, never indexed, new name: the server's table stays empty.
        block.push(0x10);
        for text in [name.as_slice(), value] {
            // Writing to a Vec cannot fail.
            let _ = loona_hpack::encoder::encode_integer_into(text.len(), 7, 0, &mut block);
            block.extend_from_slice(text);
        }
    }
    let mut out = Vec::with_capacity(block.len() + 2 * FRAME_HEADER);
    let first = MAX_FRAME - priority.len();
    let (head, mut rest) = block.split_at(first.min(block.len()));
    let mut flags = flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    put_frame_header(&mut out, priority.len() + head.len(), HEADERS, flags, stream);
    out.extend_from_slice(priority);
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(MAX_FRAME.min(rest.len()));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        put_frame_header(&mut out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
        rest = tail;
    }
    Some(out)
}

/// A block's HEADERS flags, stream id, priority fields and header block fragment (padding
/// removed, CONTINUATION payloads appended).
fn split_block(frames: &[u8]) -> Option<(u8, u32, &[u8], Vec<u8>)> {
    let flags = frames[4];
    let stream = u32::from_be_bytes(frames[5..9].try_into().ok()?) & 0x7fff_ffff;
    let len = payload_len(frames);
    let mut payload = &frames[FRAME_HEADER..FRAME_HEADER + len];
    if flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first()?;
        payload = rest.get(..rest.len().checked_sub(usize::from(pad))?)?;
    }
    let priority = if flags & PRIORITY != 0 {
        let (priority, rest) = payload.split_at_checked(5)?;
        payload = rest;
        priority
    } else {
        &[]
    };
    let mut fragment = payload.to_vec();
    let mut at = FRAME_HEADER + len;
    while at < frames.len() {
        let len = payload_len(&frames[at..]);
        fragment.extend_from_slice(&frames[at + FRAME_HEADER..at + FRAME_HEADER + len]);
        at += FRAME_HEADER + len;
    }
    Some((flags, stream, priority, fragment))
}

fn put_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.push(kind);
    out.push(flags);
    out.put_u32(stream);
}

/// `http://host:port/` → `host:port`.
fn strip_scheme(value: &[u8]) -> &[u8] {
    let Some(at) = value.windows(3).position(|w| w == b"://") else {
        return value;
    };
    let rest = &value[at + 3..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frames: the preface, a SETTINGS frame, then one HEADERS frame per block.
    fn client_bytes(
        encoder: &mut loona_hpack::Encoder<'_>,
        blocks: &[Vec<(&str, &str)>],
    ) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        put_frame_header(&mut out, 0, 0x4, 0, 0);
        for (i, headers) in blocks.iter().enumerate() {
            let block = encoder.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            let stream = 2 * i as u32 + 1;
            put_frame_header(&mut out, block.len(), HEADERS, END_HEADERS, stream);
            out.extend_from_slice(&block);
            put_frame_header(&mut out, 3, 0x0, END_STREAM, stream);
            out.extend_from_slice(b"abc");
        }
        out
    }

    /// Feeds `input` a few bytes at a time and decodes the header blocks that come out.
    fn filtered(input: &[u8], step: usize) -> (Vec<u8>, Vec<Vec<(String, String)>>) {
        let mut filter = Filter::default();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            filter.pending.extend_from_slice(chunk);
            filter.run();
            out.extend_from_slice(&filter.ready.split());
        }
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut at = PREFACE.len();
        while at < out.len() {
            if out[at + 3] == HEADERS {
                let Block::Complete(end) = block_end(&out[at..]) else { panic!("cut block") };
                let (_, _, _, fragment) = split_block(&out[at..at + end]).unwrap();
                let headers = decoder.decode(&fragment).unwrap();
                blocks.push(
                    headers
                        .into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect(),
                );
                at += end;
            } else {
                at += FRAME_HEADER + payload_len(&out[at..]);
            }
        }
        (out, blocks)
    }

    fn request(authority: &str) -> Vec<(&str, &str)> {
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
    }

    #[test]
    fn drops_the_scheme_from_every_block_of_the_connection() {
        let mut encoder = loona_hpack::Encoder::new();
        // The second block refers to the first one's entries in the client's dynamic table.
        let input = client_bytes(
            &mut encoder,
            &[request("http://127.0.0.1:2379"), request("http://127.0.0.1:2379")],
        );
        for step in [1, 7, 64, input.len()] {
            let (_, blocks) = filtered(&input, step);
            assert_eq!(blocks.len(), 2);
            for block in blocks {
                assert!(block.contains(&(":authority".into(), "127.0.0.1:2379".into())));
                assert!(
                    block.contains(&(":path".into(), "/etcdserverpb.Maintenance/Status".into()))
                );
            }
        }
    }

    #[test]
    fn a_proper_authority_passes_unchanged() {
        let mut encoder = loona_hpack::Encoder::new();
        let input =
            client_bytes(&mut encoder, &[request("127.0.0.1:2379"), request("127.0.0.1:2379")]);
        let (out, blocks) = filtered(&input, 5);
        assert_eq!(out, input);
        assert_eq!(blocks.len(), 2);
    }

    #[test]
    fn http1_passes_unchanged() {
        let input = b"POST /v3/kv/range HTTP/1.1\r\nHost: http://x\r\n\r\n{}".to_vec();
        let mut filter = Filter::default();
        filter.pending.extend_from_slice(&input);
        filter.run();
        assert_eq!(&filter.ready[..], &input[..]);
        assert!(filter.passes_through());
    }

    #[test]
    fn strips_scheme_and_path() {
        assert_eq!(strip_scheme(b"http://h:1"), b"h:1");
        assert_eq!(strip_scheme(b"https://h:1/x"), b"h:1");
        assert_eq!(strip_scheme(b"h:1"), b"h:1");
    }
}
