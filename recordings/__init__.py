"""Call recordings, voicemail and transcription."""
