//! The console servers behind `vncwebsocket`: an RFB 3.8 server (version handshake, VNC
//! authentication with the DES challenge, ServerInit, a solid-colour framebuffer in the
//! client's pixel format) and termproxy's protocol (`user:ticket\n` → `OK`, then a login
//! prompt echoing input), both over websocket binary frames.

use std::collections::VecDeque;

use des::Des;
use des::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::model::GuestKind;

/// The framebuffer size the simulated console reports.
pub const FB_WIDTH: u16 = 640;
pub const FB_HEIGHT: u16 = 480;

/// The VNC authentication response: the 16-byte challenge DES-encrypted with the password
/// (first 8 bytes, zero padded, each byte bit-reversed as VNC requires).
pub fn vnc_auth_response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (i, b) in password.bytes().take(8).enumerate() {
        key[i] = b.reverse_bits();
    }
    let cipher = Des::new_from_slice(&key).expect("DES takes 8-byte keys");
    let mut out = *challenge;
    for chunk in out.chunks_mut(8) {
        let block = GenericArray::from_mut_slice(chunk);
        cipher.encrypt_block(block);
    }
    out
}

/// Byte stream view of a websocket: binary (or text) payloads in, binary frames out.
struct WsIo<S> {
    ws: WebSocketStream<S>,
    buf: VecDeque<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    async fn fill(&mut self) -> Result<(), String> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    self.buf.extend(b.iter());
                    return Ok(());
                }
                Some(Ok(Message::Text(t))) => {
                    self.buf.extend(t.as_bytes());
                    return Ok(());
                }
                Some(Ok(Message::Close(_))) | None => return Err("connection closed".into()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
            }
        }
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn send(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.ws.send(Message::Binary(data.into())).await.map_err(|e| e.to_string())
    }
}

/// The pixel format a client asked for (RFB `PIXEL_FORMAT`).
#[derive(Debug, Clone, Copy)]
struct PixelFormat {
    bpp: u8,
    big_endian: bool,
    max: [u16; 3],
    shift: [u8; 3],
}

impl PixelFormat {
    const DEFAULT: PixelFormat = PixelFormat { bpp: 32, big_endian: false, max: [255, 255, 255], shift: [16, 8, 0] };

    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bpp;
        b[1] = if self.bpp == 32 { 24 } else { self.bpp };
        b[2] = u8::from(self.big_endian);
        b[3] = 1;
        b[4..6].copy_from_slice(&self.max[0].to_be_bytes());
        b[6..8].copy_from_slice(&self.max[1].to_be_bytes());
        b[8..10].copy_from_slice(&self.max[2].to_be_bytes());
        b[10] = self.shift[0];
        b[11] = self.shift[1];
        b[12] = self.shift[2];
        b
    }

    fn decode(b: &[u8]) -> PixelFormat {
        PixelFormat {
            bpp: b[0],
            big_endian: b[2] != 0,
            max: [u16::from_be_bytes([b[4], b[5]]), u16::from_be_bytes([b[6], b[7]]), u16::from_be_bytes([b[8], b[9]])],
            shift: [b[10], b[11], b[12]],
        }
    }

    /// One pixel of colour `rgb` in this format.
    fn pixel(&self, rgb: [u8; 3]) -> Vec<u8> {
        let mut v: u32 = 0;
        for ((c, max), shift) in rgb.iter().zip(self.max).zip(self.shift) {
            v |= (u32::from(*c) * u32::from(max) / 255) << shift;
        }
        let bytes = usize::from(self.bpp / 8).max(1);
        let le = v.to_le_bytes();
        let mut out: Vec<u8> = le[..bytes.min(4)].to_vec();
        if self.big_endian {
            out.reverse();
        }
        out
    }
}

/// Serves one VNC session: RFB 3.8 (3.3 and 3.7 clients too) with VNC authentication.
pub async fn serve_vnc<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    password: &str,
    name: &str,
) -> Result<(), String> {
    let mut io = WsIo { ws, buf: VecDeque::new() };
    io.send(b"RFB 003.008\n".to_vec()).await?;
    let version = io.read_exact(12).await?;
    let minor = match &version[..] {
        b"RFB 003.003\n" => 3,
        b"RFB 003.007\n" => 7,
        v if v.starts_with(b"RFB 003.") => 8,
        _ => return Err("not an RFB client".into()),
    };
    if minor == 3 {
        io.send(2u32.to_be_bytes().to_vec()).await?;
    } else {
        io.send(vec![1, 2]).await?;
        let choice = io.read_exact(1).await?;
        if choice[0] != 2 {
            let reason = b"security type not supported";
            let mut msg = 1u32.to_be_bytes().to_vec();
            msg.extend_from_slice(&(reason.len() as u32).to_be_bytes());
            msg.extend_from_slice(reason);
            io.send(msg).await?;
            return Err("client refused VNC authentication".into());
        }
    }
    let challenge: [u8; 16] = rand::random();
    io.send(challenge.to_vec()).await?;
    let answer = io.read_exact(16).await?;
    if answer[..] != vnc_auth_response(password, &challenge)[..] {
        let mut msg = 1u32.to_be_bytes().to_vec();
        if minor == 8 {
            let reason = b"Authentication failed";
            msg.extend_from_slice(&(reason.len() as u32).to_be_bytes());
            msg.extend_from_slice(reason);
        }
        io.send(msg).await?;
        return Err("VNC authentication failed".into());
    }
    io.send(0u32.to_be_bytes().to_vec()).await?;
    let _shared = io.read_exact(1).await?;
    let mut init = Vec::with_capacity(24 + name.len());
    init.extend_from_slice(&FB_WIDTH.to_be_bytes());
    init.extend_from_slice(&FB_HEIGHT.to_be_bytes());
    init.extend_from_slice(&PixelFormat::DEFAULT.encode());
    init.extend_from_slice(&(name.len() as u32).to_be_bytes());
    init.extend_from_slice(name.as_bytes());
    io.send(init).await?;
    let mut format = PixelFormat::DEFAULT;
    loop {
        let kind = io.read_exact(1).await?[0];
        match kind {
            0 => {
                let b = io.read_exact(19).await?;
                format = PixelFormat::decode(&b[3..]);
            }
            2 => {
                let b = io.read_exact(3).await?;
                let n = usize::from(u16::from_be_bytes([b[1], b[2]]));
                io.read_exact(4 * n).await?;
            }
            3 => {
                let b = io.read_exact(9).await?;
                let incremental = b[0] != 0;
                // The screen never changes: only full requests get a frame.
                if !incremental {
                    io.send(frame(&format)).await?;
                }
            }
            4 => {
                io.read_exact(7).await?;
            }
            5 => {
                io.read_exact(5).await?;
            }
            6 => {
                let b = io.read_exact(7).await?;
                let n = u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize;
                io.read_exact(n).await?;
            }
            other => return Err(format!("unknown RFB client message {other}")),
        }
    }
}

/// A FramebufferUpdate with one raw rectangle covering the screen (a dark console blue).
fn frame(format: &PixelFormat) -> Vec<u8> {
    let px = format.pixel([0x1d, 0x2b, 0x3a]);
    let pixels = usize::from(FB_WIDTH) * usize::from(FB_HEIGHT);
    let mut out = Vec::with_capacity(16 + pixels * px.len());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&FB_WIDTH.to_be_bytes());
    out.extend_from_slice(&FB_HEIGHT.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    for _ in 0..pixels {
        out.extend_from_slice(&px);
    }
    out
}

/// Serves one termproxy session: the first message is `user:ticket\n`, answered `OK`; then
/// `0:<len>:<data>` input is echoed, `1:<cols>:<rows>:` resizes and `2` pings are accepted.
pub async fn serve_term<S, F>(ws: WebSocketStream<S>, check: F, name: &str, kind: GuestKind) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(&str) -> Option<()>,
{
    let mut ws = ws;
    let first = match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).to_string(),
        _ => return Err("connection closed before authentication".into()),
    };
    if check(&first).is_none() {
        let _ = ws.close(None).await;
        return Err("invalid termproxy ticket".into());
    }
    ws.send(Message::Binary(b"OK".to_vec().into())).await.map_err(|e| e.to_string())?;
    let tty = if kind == GuestKind::Qemu { "ttyS0" } else { "tty1" };
    let banner = format!("\r\nDebian GNU/Linux 12 {name} {tty}\r\n\r\n{name} login: ");
    ws.send(Message::Binary(banner.into_bytes().into())).await.map_err(|e| e.to_string())?;
    while let Some(msg) = ws.next().await {
        let data: Vec<u8> = match msg.map_err(|e| e.to_string())? {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        if let Some(rest) = data.strip_prefix(b"0:") {
            let Some(colon) = rest.iter().position(|b| *b == b':') else { continue };
            let payload = &rest[colon + 1..];
            let echo: Vec<u8> =
                payload.iter().flat_map(|b| if *b == b'\r' { vec![b'\r', b'\n'] } else { vec![*b] }).collect();
            ws.send(Message::Binary(echo.into())).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_auth_matches_the_known_vector() {
        // ECB: both halves of a zero challenge encrypt alike; the key is the password.
        let r = vnc_auth_response("password", &[0u8; 16]);
        assert_eq!(&r[..8], &r[8..]);
        assert_ne!(r, [0u8; 16]);
        assert_ne!(vnc_auth_response("passworD", &[0u8; 16]), r);
        // Only the first 8 characters count.
        assert_eq!(vnc_auth_response("password-and-more", &[0u8; 16]), r);
        let px = PixelFormat { bpp: 16, big_endian: true, max: [31, 63, 31], shift: [11, 5, 0] }.pixel([255, 255, 255]);
        assert_eq!(px, vec![0xff, 0xff]);
        assert_eq!(PixelFormat::DEFAULT.pixel([1, 2, 3]), vec![3, 2, 1, 0]);
    }
}
