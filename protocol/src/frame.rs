//! Frames: a `u32` little-endian length, then that many bytes of an rkyv archive.
//!
//! Network bytes are always validated (`rkyv::access` with bytecheck) before use, and a
//! length prefix over [`MAX_FRAME`] is refused before anything is allocated.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::Serialize;

use crate::messages::{ArchivedRequest, Request, Response};
use crate::peer::{ArchivedPeerRequest, PeerRequest};

/// The largest frame either side accepts (16 MiB). A bigger length prefix is answered with a
/// `too_large` error frame and the stream is closed; the claimed size is never allocated.
pub const MAX_FRAME: usize = 16 << 20;

/// Serialises a message into a frame: length prefix followed by the archive.
pub fn encode<T>(value: &T) -> Result<Vec<u8>, FrameError>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    let body =
        rkyv::to_bytes::<rancor::Error>(value).map_err(|e| FrameError::Encode(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix (or an encoded message) is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The peer finished the stream in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream was reset or the connection lost while reading.
    #[cfg(feature = "stream")]
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream was stopped or the connection lost while writing.
    #[cfg(feature = "stream")]
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// rkyv could not serialise the message.
    #[error("could not encode: {0}")]
    Encode(String),
    /// The bytes are not a valid archive of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

#[cfg(feature = "stream")]
/// Reads one frame. `Ok(None)` means the peer finished the stream cleanly before a frame
/// began. The buffer grows as bytes arrive, so a lying length prefix costs nothing.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<AlignedVec>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut len[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(FrameError::Truncated),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = AlignedVec::with_capacity(len.min(64 << 10));
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => return Err(FrameError::Truncated),
        }
    }
    Ok(Some(buf))
}

/// Validates and reads a request archive (bytecheck; never unchecked on network input).
pub fn access_request(bytes: &[u8]) -> Result<&ArchivedRequest, FrameError> {
    rkyv::access::<ArchivedRequest, rancor::Error>(bytes)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Validates and deserialises a response.
pub fn decode_response(bytes: &[u8]) -> Result<Response, FrameError> {
    rkyv::from_bytes::<Response, rancor::Error>(bytes)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Validates and deserialises a request body (for tests and tools; the server reads archives
/// in place with [`access_request`]). Copies the bytes first, so any alignment is fine.
pub fn decode_request(bytes: &[u8]) -> Result<Request, FrameError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Request, rancor::Error>(&aligned)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Validates a request archive and reads the peer request in it (the peer listener serves
/// nothing else: a client's request there is refused).
pub fn access_peer_request(bytes: &[u8]) -> Result<&ArchivedPeerRequest, FrameError> {
    match access_request(bytes)? {
        ArchivedRequest::Peer(p) => Ok(p),
        _ => Err(FrameError::Malformed(
            "a client request sent to the peer listener: clients use the node's QUIC port".into(),
        )),
    }
}

/// Frames a peer request (as the `Peer` variant of [`Request`]).
pub fn encode_peer(req: PeerRequest) -> Result<Vec<u8>, FrameError> {
    encode(&Request::Peer(req))
}
