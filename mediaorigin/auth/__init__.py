"""Who may do what: API keys and roles for the management API (playback tokens come later)."""
