"""Two-channel Ogg Opus with the channels coded independently (libopusenc through ctypes).

Why not ``opusenc`` for calls: a stereo input becomes one *coupled* Opus
stream, and below about 32 kbit/s libopus narrows the stereo image to save
bits; at the 16 kbit/s a call can afford it codes the pair as mono (left =
right), which loses who said what. opus-tools 0.2 (Debian 12) has no option
for independent channels, but its library, libopusenc (package libopusenc0,
installed with opus-tools), builds a multistream encoder of one *uncoupled*
mono stream per channel when asked for channel mapping family 255.

Family 255 means "channels without a defined meaning", and general-purpose
players (libopusfile, hence opusdec) refuse it. RFC 7845 family 1 carries the
same explicit table (stream count, coupled count, channel -> stream) and
defines two channels as left, right: so the identification header is written
as family 1 with the table libopusenc chose (2 streams, 0 coupled, map 0, 1).
Every decoder that follows the table (libopusfile, FFmpeg, Chromium) then
plays caller left and far side right, each kept apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from pathlib import Path

OPUS_SET_BITRATE = 4002
OPUS_SET_COMPLEXITY = 4010
OPUS_SET_SIGNAL = 4024
OPUS_SIGNAL_VOICE = 3001
FAMILY_INDEPENDENT = 255
FAMILY_SURROUND = 1
HEAD_FAMILY_OFFSET = 18  # "OpusHead", version, channels, pre-skip(2), rate(4), gain(2), family


class OpusEncodeError(RuntimeError):
    pass


@cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("opusenc") or "libopusenc.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise OpusEncodeError(f"libopusenc is not installed ({exc}); apt-get install libopusenc0") from exc
    lib.ope_comments_create.restype = ctypes.c_void_p
    lib.ope_comments_add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.ope_comments_destroy.argtypes = [ctypes.c_void_p]
    lib.ope_encoder_create_file.restype = ctypes.c_void_p
    lib.ope_encoder_create_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int,
                                            ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.ope_encoder_write.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.ope_encoder_drain.argtypes = [ctypes.c_void_p]
    lib.ope_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.ope_strerror.restype = ctypes.c_char_p
    lib.ope_strerror.argtypes = [ctypes.c_int]
    # ope_encoder_ctl is variadic: its int arguments are passed without argtypes.
    return lib


def _check(lib: ctypes.CDLL, code: int, what: str) -> None:
    if code != 0:
        raise OpusEncodeError(f"{what}: {lib.ope_strerror(code).decode(errors='replace')}")


def encode_independent_channels(raw: Path, target: Path, rate: int, channels: int, bitrate_bps: int,
                                comments: dict[str, str] | None = None) -> None:
    """s16le interleaved ``raw`` -> Ogg Opus ``target``, one mono Opus stream per channel."""
    lib = _lib()
    tags = lib.ope_comments_create()
    for key, value in (comments or {}).items():
        lib.ope_comments_add(tags, key.encode(), value.encode())
    error = ctypes.c_int(0)
    enc = lib.ope_encoder_create_file(str(target).encode(), tags, rate, channels, FAMILY_INDEPENDENT,
                                      ctypes.byref(error))
    lib.ope_comments_destroy(tags)
    if not enc:
        _check(lib, error.value or -1, f"cannot create {target}")
    handle = ctypes.c_void_p(enc)
    try:
        for request, value in ((OPUS_SET_BITRATE, bitrate_bps), (OPUS_SET_COMPLEXITY, 10),
                               (OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE)):
            _check(lib, lib.ope_encoder_ctl(handle, ctypes.c_int(request), ctypes.c_int(value)), "encoder setting")
        frame = 2 * channels
        with raw.open("rb") as source:
            for block in iter(lambda: source.read(rate * frame), b""):
                usable = len(block) // frame
                if usable:
                    _check(lib, lib.ope_encoder_write(handle, block[: usable * frame], usable), f"encoding {raw}")
        _check(lib, lib.ope_encoder_drain(handle), f"finishing {target}")
    finally:
        lib.ope_encoder_destroy(handle)
    _declare_left_right(target)


def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        value = byte << 24
        for _ in range(8):
            value = ((value << 1) ^ 0x04C11DB7) if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return table


_CRC_TABLE = _ogg_crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected: zlib.crc32 differs)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _declare_left_right(path: Path) -> None:
    """Rewrite the family byte of the identification header (family 255 -> 1) and its page checksum."""
    with path.open("r+b") as handle:
        head = bytearray(handle.read(27 + 255 + 64))
        segments = head[26]
        body = 27 + segments
        length = sum(head[27:body])
        page = head[: body + length]
        if head[:4] != b"OggS" or page[body:body + 8] != b"OpusHead" or len(head) < body + length:
            raise OpusEncodeError(f"{path}: unexpected first page")
        if page[body + HEAD_FAMILY_OFFSET] != FAMILY_INDEPENDENT:
            raise OpusEncodeError(f"{path}: channel mapping family {page[body + HEAD_FAMILY_OFFSET]}, expected 255")
        page[body + HEAD_FAMILY_OFFSET] = FAMILY_SURROUND
        page[22:26] = b"\0\0\0\0"
        page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
        handle.seek(0)
        handle.write(page)


def stream_layout(path: Path) -> tuple[int, int, int, int]:
    """(channels, family, streams, coupled streams) from the identification header."""
    with path.open("rb") as handle:
        head = handle.read(27 + 255 + 64)
    body = 27 + head[26]
    packet = head[body:]
    if head[:4] != b"OggS" or packet[:8] != b"OpusHead":
        raise OpusEncodeError(f"{path}: not an Ogg Opus file")
    family = packet[HEAD_FAMILY_OFFSET]
    if family == 0:
        return packet[9], 0, 1, 1 if packet[9] == 2 else 0
    return packet[9], family, packet[19], packet[20]
