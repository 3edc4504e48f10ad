"""Recording metadata: one row per recorded file (call recording or voice message)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow
from core.settings import DEFAULT_NODE


class Recording(Base):
    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="call")  # call | voicemail
    node: Mapped[str] = mapped_column(String(16), default=DEFAULT_NODE, server_default=DEFAULT_NODE)  # whose spool it came from
    caller_number: Mapped[str | None] = mapped_column(String(32))
    agent_extension: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    path: Mapped[str] = mapped_column(String(255))  # relative to the recordings storage root
    format: Mapped[str] = mapped_column(String(16), default="wav")
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    transcript: Mapped[str | None] = mapped_column(Text)
    # pending | done | no_model | failed | too_short | not_requested
    transcript_status: Mapped[str] = mapped_column(String(32), default="pending")
    transcript_note: Mapped[str | None] = mapped_column(String(255))
    ticket_number: Mapped[str | None] = mapped_column(String(32), index=True)
    hotline: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PlaybackLog(Base):
    """Who listened to which recording, when (every playback is logged)."""

    __tablename__ = "recording_playbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(Integer, index=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    range_header: Mapped[str | None] = mapped_column(String(64))
    client_address: Mapped[str | None] = mapped_column(String(64))   # the peer of the connection
    forwarded_for: Mapped[str | None] = mapped_column(String(255))   # X-Forwarded-For as sent (a proxy's word)
