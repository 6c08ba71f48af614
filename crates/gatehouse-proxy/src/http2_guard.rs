//! HTTP/2 abuse limits per connection (docs/protection.md): stream resets
//! (`http2_max_resets`, the rapid-reset attack), and PING, SETTINGS, empty-frame and
//! CONTINUATION floods. hyper and h2 expose no per-window count of what a client sends,
//! so the guard reads the frame headers as the bytes pass under hyper (nothing is
//! copied; payloads are skipped). Over a limit, the bytes that crossed it never reach
//! hyper: the guard writes GOAWAY `ENHANCE_YOUR_CALM` itself, at a frame boundary of
//! what hyper has written, and ends the connection.

use std::time::{Duration, Instant};

/// The client connection preface, which precedes the first frame.
const PREFACE_LEN: usize = 24;

/// Frame types (RFC 9113 section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;
/// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// GOAWAY and its error code.
const GOAWAY: u8 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Fixed limits of the floods (per connection, per [`FLOOD_WINDOW`]): far above what
/// browsers, gRPC keepalives and SDKs send, far below what a flood needs.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);
const MAX_PINGS: u32 = 100;
const MAX_SETTINGS: u32 = 100;
const MAX_EMPTY_FRAMES: u32 = 100;
/// The frame size the server advertises (h2's default, which hyper keeps).
const FRAME_SIZE: u32 = 16_384;

/// CONTINUATION frames one header block may take on a connection whose header lists are
/// at most `header_list` bytes: one fewer than h2's own limit (the frames a full list
/// needs plus a quarter, at least 5), so the guard, which also counts the offence, acts
/// first.
pub fn max_continuations(header_list: u32) -> u32 {
    let needed = (header_list / FRAME_SIZE).max(1);
    (needed + needed / 4).max(5) - 1
}

/// Which limit a client crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// More stream resets than `http2_max_resets`.
    Resets,
    /// Too many PINGs.
    PingFlood,
    /// Too many SETTINGS.
    SettingsFlood,
    /// Too many DATA or CONTINUATION frames with nothing in them.
    EmptyFrames,
    /// Too many CONTINUATION frames in one header block.
    ContinuationFlood,
}

impl Abuse {
    /// Its name in the log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Resets => "rapid_reset",
            Self::PingFlood => "ping_flood",
            Self::SettingsFlood => "settings_flood",
            Self::EmptyFrames => "empty_frames",
            Self::ContinuationFlood => "continuation_flood",
        }
    }
}

/// One frame's header.
#[derive(Debug, Clone, Copy)]
struct Head {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Finds frame headers in a byte stream fed to it in pieces of any size.
#[derive(Debug, Default)]
pub struct FrameCursor {
    /// Bytes of a preface still to pass before the first frame.
    preface: usize,
    head: [u8; 9],
    filled: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
}

impl FrameCursor {
    /// A cursor for a stream that starts with `preface` bytes before its first frame.
    fn new(preface: usize) -> Self {
        Self {
            preface,
            ..Self::default()
        }
    }

    /// Passes `data`, calling `frame` with each header completed in it; stops (returning
    /// `Some`) as soon as `frame` does.
    fn feed<T>(&mut self, mut data: &[u8], mut frame: impl FnMut(Head) -> Option<T>) -> Option<T> {
        loop {
            if self.preface > 0 {
                let n = self.preface.min(data.len());
                self.preface -= n;
                data = &data[n..];
            }
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
            }
            if data.is_empty() {
                return None;
            }
            let n = (9 - self.filled).min(data.len());
            self.head[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == 9 {
                self.filled = 0;
                let h = &self.head;
                let head = Head {
                    len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                };
                self.skip = head.len;
                if let Some(t) = frame(head) {
                    return Some(t);
                }
            }
        }
    }

    /// Whether the stream is between frames (so a frame may be inserted).
    fn at_boundary(&self) -> bool {
        self.preface == 0 && self.filled == 0 && self.skip == 0
    }
}

/// A count over a fixed window.
#[derive(Debug)]
struct Tally {
    since: Instant,
    n: u32,
}

impl Tally {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            n: 0,
        }
    }

    /// Counts one at `now`; whether that makes more than `limit` within `per`.
    fn over(&mut self, limit: u32, per: Duration) -> bool {
        let now = Instant::now();
        if now.duration_since(self.since) >= per {
            self.since = now;
            self.n = 0;
        }
        self.n = self.n.saturating_add(1);
        self.n > limit
    }
}

/// The guard of one HTTP/2 connection.
#[derive(Debug)]
pub struct Http2Guard {
    inbound: FrameCursor,
    outbound: FrameCursor,
    resets: Tally,
    reset_limit: (u32, Duration),
    pings: Tally,
    settings: Tally,
    empty: Tally,
    continuations: u32,
    max_continuations: u32,
    last_stream: u32,
}

impl Http2Guard {
    /// A guard allowing `resets` RST_STREAM frames per `per`, and header blocks of at
    /// most `header_list` bytes (see [`max_continuations`]).
    pub fn new(resets: u32, per: Duration, header_list: u32) -> Self {
        Self {
            inbound: FrameCursor::new(PREFACE_LEN),
            outbound: FrameCursor::new(0),
            resets: Tally::new(),
            reset_limit: (resets, per),
            pings: Tally::new(),
            settings: Tally::new(),
            empty: Tally::new(),
            continuations: 0,
            max_continuations: max_continuations(header_list),
            last_stream: 0,
        }
    }

    /// Reads what the client sent; the abuse it commits, if any.
    pub fn inbound(&mut self, data: &[u8]) -> Option<Abuse> {
        let Self {
            inbound,
            resets,
            reset_limit,
            pings,
            settings,
            empty,
            continuations,
            max_continuations,
            last_stream,
            ..
        } = self;
        inbound.feed(data, |h| {
            let flood = |t: &mut Tally, limit| t.over(limit, FLOOD_WINDOW);
            match h.kind {
                DATA if h.len == 0 && h.flags & END_STREAM == 0 => {
                    flood(empty, MAX_EMPTY_FRAMES).then_some(Abuse::EmptyFrames)
                }
                HEADERS => {
                    *last_stream = (*last_stream).max(h.stream);
                    *continuations = 0;
                    None
                }
                CONTINUATION => {
                    *continuations += 1;
                    if *continuations > *max_continuations {
                        return Some(Abuse::ContinuationFlood);
                    }
                    let empty_frame = h.len == 0 && h.flags & END_HEADERS == 0;
                    (empty_frame && flood(empty, MAX_EMPTY_FRAMES)).then_some(Abuse::EmptyFrames)
                }
                RST_STREAM => resets
                    .over(reset_limit.0, reset_limit.1)
                    .then_some(Abuse::Resets),
                SETTINGS if h.flags & ACK == 0 => {
                    flood(settings, MAX_SETTINGS).then_some(Abuse::SettingsFlood)
                }
                PING if h.flags & ACK == 0 => flood(pings, MAX_PINGS).then_some(Abuse::PingFlood),
                _ => None,
            }
        })
    }

    /// Notes what went out to the client (to know where a frame may be inserted).
    pub fn outbound(&mut self, data: &[u8]) {
        self.outbound.feed(data, |_| None::<()>);
    }

    /// GOAWAY `ENHANCE_YOUR_CALM` naming the last stream the client opened, when it can
    /// go out now (between two of hyper's frames); `None` mid-frame.
    pub fn goaway(&self) -> Option<[u8; 17]> {
        if !self.outbound.at_boundary() {
            return None;
        }
        let mut f = [0u8; 17];
        f[2] = 8;
        f[3] = GOAWAY;
        f[9..13].copy_from_slice(&self.last_stream.to_be_bytes());
        f[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn guard() -> Http2Guard {
        let mut g = Http2Guard::new(3, Duration::from_secs(10), 32_768);
        assert_eq!(g.inbound(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
        g
    }

    #[test]
    fn resets_over_the_limit_are_abuse_even_split_byte_by_byte() {
        let mut g = guard();
        let mut bytes = Vec::new();
        for s in [1u32, 3, 5, 7] {
            bytes.extend(frame(HEADERS, END_HEADERS, s, b"hdr"));
            bytes.extend(frame(RST_STREAM, 0, s, &8u32.to_be_bytes()));
        }
        let found: Vec<_> = bytes.chunks(1).filter_map(|b| g.inbound(b)).collect();
        assert_eq!(found, [Abuse::Resets]);
        let goaway = g.goaway().unwrap();
        assert_eq!(&goaway[..9], &[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
        assert_eq!(u32::from_be_bytes(goaway[9..13].try_into().unwrap()), 7);
        assert_eq!(u32::from_be_bytes(goaway[13..].try_into().unwrap()), 0xb);
    }

    #[test]
    fn floods_of_pings_settings_and_empty_frames_are_abuse_acks_are_not() {
        let mut g = guard();
        for _ in 0..500 {
            assert_eq!(g.inbound(&frame(PING, ACK, 0, &[0; 8])), None);
            assert_eq!(g.inbound(&frame(SETTINGS, ACK, 0, &[])), None);
        }
        let pings: Vec<_> = (0..=MAX_PINGS)
            .filter_map(|_| g.inbound(&frame(PING, 0, 0, &[0; 8])))
            .collect();
        assert_eq!(pings, [Abuse::PingFlood]);
        let mut g = guard();
        let settings = (0..=MAX_SETTINGS).find_map(|_| g.inbound(&frame(SETTINGS, 0, 0, &[])));
        assert_eq!(settings, Some(Abuse::SettingsFlood));
        let mut g = guard();
        let empty = (0..=MAX_EMPTY_FRAMES).find_map(|_| g.inbound(&frame(DATA, 0, 1, &[])));
        assert_eq!(empty, Some(Abuse::EmptyFrames));
        // A body's last empty DATA frame (END_STREAM) is how many clients end a body.
        let mut g = guard();
        assert!((0..1000).all(|_| g.inbound(&frame(DATA, END_STREAM, 1, &[])).is_none()));
    }

    #[test]
    fn a_header_block_of_too_many_continuations_is_abuse() {
        assert_eq!(max_continuations(32_768), 4);
        assert_eq!(max_continuations(1 << 20), 79);
        let max = max_continuations(32_768);
        let mut g = guard();
        assert_eq!(g.inbound(&frame(HEADERS, 0, 1, b"h")), None);
        let found = (0..=max).find_map(|_| g.inbound(&frame(CONTINUATION, 0, 1, b"x")));
        assert_eq!(found, Some(Abuse::ContinuationFlood));
        // A new block starts the count afresh.
        let mut g = guard();
        for s in 0..10u32 {
            assert_eq!(g.inbound(&frame(HEADERS, 0, 2 * s + 1, b"h")), None);
            for _ in 0..max {
                assert_eq!(g.inbound(&frame(CONTINUATION, 0, 2 * s + 1, b"x")), None);
            }
        }
    }

    #[test]
    fn goaway_waits_for_a_frame_boundary_of_what_went_out() {
        let mut g = guard();
        let out = frame(DATA, 0, 1, &[7; 100]);
        g.outbound(&out[..50]);
        assert!(g.goaway().is_none());
        g.outbound(&out[50..]);
        assert!(g.goaway().is_some());
    }
}
