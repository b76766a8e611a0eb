"""The management API under /api: media library, uploads (multipart and tus), jobs, webhooks."""
