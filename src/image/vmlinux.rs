//! Extracting the ELF vmlinux that a bzImage carries (Firecracker on x86_64
//! boots only ELF).
use std::io::Read;
use std::path::Path;

use super::elf::{u16_at, u32_at};
use super::fsutil::write_atomically;
use super::kernel::{kernel_format_of, PROTOCOL_VERSION, SETUP_SECTS};
use super::ImageError;
use crate::model::KernelFormat;

// Linux x86 boot protocol (Documentation/arch/x86/boot.rst).
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// payload_offset/payload_length exist from boot protocol 2.08 on.
const MIN_PROTOCOL_WITH_PAYLOAD: u16 = 0x0208;
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Each LZ4 legacy block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

fn kernel_error(path: &Path, message: impl Into<String>) -> ImageError {
    ImageError::Kernel {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
/// Extracts the ELF vmlinux from the compressed payload of `bzimage` into
/// `out` (written atomically). LZ4 (Debian's choice), gzip and zstd payloads
/// are understood.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), ImageError> {
    let data = std::fs::read(bzimage).map_err(|e| ImageError::io("reading kernel", bzimage, e))?;
    let payload = bzimage_payload(&data).map_err(|message| kernel_error(bzimage, message))?;
    let vmlinux = decompress_payload(payload).map_err(|message| kernel_error(bzimage, message))?;
    if kernel_format_of(&vmlinux) != Some(KernelFormat::Elf) {
        return Err(kernel_error(
            bzimage,
            "the decompressed payload is not an x86_64 ELF file",
        ));
    }
    write_atomically(out, &vmlinux)
}

/// The compressed kernel inside a bzImage.
pub fn bzimage_payload(data: &[u8]) -> Result<&[u8], String> {
    if kernel_format_of(data) != Some(KernelFormat::Bzimage) {
        return Err("not a bzImage".into());
    }
    let version = u16_at(data, PROTOCOL_VERSION).unwrap_or(0);
    if version < MIN_PROTOCOL_WITH_PAYLOAD {
        return Err(format!("boot protocol {version:#x} is too old to locate the payload"));
    }
    let setup_sects = match data[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(offset), Some(length)) = (u32_at(data, PAYLOAD_OFFSET), u32_at(data, PAYLOAD_LENGTH)) else {
        return Err("truncated boot header".into());
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    data.get(start..start + length as usize)
        .ok_or_else(|| "payload lies beyond the end of the file".to_string())
}

fn decompress_payload(payload: &[u8]) -> Result<Vec<u8>, String> {
    if u32_at(payload, 0) == Some(LZ4_LEGACY_MAGIC) {
        return decompress_lz4_legacy(payload);
    }
    if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(payload)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip payload: {e}"))?;
        return Ok(out);
    }
    if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // The kernel appends the decompressed size after the frame; a
        // single-frame decoder ignores it.
        let mut out = Vec::new();
        let mut decoder = zstd::stream::read::Decoder::new(payload)
            .map_err(|e| format!("zstd payload: {e}"))?
            .single_frame();
        decoder
            .read_to_end(&mut out)
            .map_err(|e| format!("zstd payload: {e}"))?;
        return Ok(out);
    }
    let magic: Vec<String> = payload.iter().take(4).map(|b| format!("{b:02x}")).collect();
    Err(format!(
        "unsupported payload compression (magic {}); LZ4, gzip and zstd are supported",
        magic.join(" ")
    ))
}

/// LZ4 "legacy" frames as written by the kernel's build: the magic, then
/// blocks of (le32 compressed size, data); the kernel appends the le32
/// decompressed size, which is not a block and ends the stream.
fn decompress_lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut at = 4;
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while let Some(size) = u32_at(payload, at) {
        if size == LZ4_LEGACY_MAGIC {
            at += 4; // Concatenated legacy streams.
            continue;
        }
        let start = at + 4;
        let Some(compressed) = payload.get(start..start + size as usize) else {
            break; // The trailing size field (or padding), not a block.
        };
        let written = lz4_flex::block::decompress_into(compressed, &mut block)
            .map_err(|e| format!("lz4 block at offset {at}: {e}"))?;
        out.extend_from_slice(&block[..written]);
        at = start + size as usize;
    }
    if out.is_empty() {
        return Err("lz4 payload holds no data".into());
    }
    Ok(out)
}
