"""Settings: `config.toml`, then `MEDIAORIGIN_<SECTION>_<KEY>` environment overrides.

Each section is a dataclass; the field's type decides how an environment string is read.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    pass


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1  # processes sharing the port with SO_REUSEPORT
    loop: str = "asyncio"  # "asyncio" or "uvloop"
    access_log: bool = False
    # CORS: the origins allowed to fetch playback URLs from a browser ("*" for any).
    cors_origins: str = "*"
    metrics_token: str = ""  # when set, GET /metrics needs Authorization: Bearer <token>
    # freed memory glibc keeps for reuse instead of unmapping it (see tuning.py); 0: default
    keep_freed_memory_mb: int = 128
    # Set by `serve` for workers > 1 (not a setting): the Unix socket on which the first
    # worker, which owns live streams, takes the live requests the others forward.
    live_socket: str = ""


@dataclass
class StorageConfig:
    root: str = "var/media"  # stored media; every path served is confined to it
    cache_dir: str = "var/cache"  # index and segment caches (safe to delete)


@dataclass
class PackagingConfig:
    target_duration: float = 4.0  # seconds; segments start at the first keyframe after it
    index_memory_entries: int = 256  # parsed indexes kept in memory
    segment_memory_mb: int = 256  # hot segments kept in memory
    segment_disk_mb: int = 4096  # segments kept on disk for sendfile; 0 disables


@dataclass
class AuthConfig:
    # "open": playback needs no credential (access rules still apply); "token": every
    # manifest, segment, key and license request needs a playback token or a signed URL.
    playback: str = "open"
    # Playback tokens (JWT): HS256 secrets "kid:base64secret,..." and/or ES256/EdDSA private
    # keys "kid:/path/key.pem,..."; tokens are signed with token_current_kid (default: the
    # last key listed). Empty: one HS256 secret is generated once into token_secret_file.
    token_secrets: str = ""
    token_keys: str = ""
    token_current_kid: str = ""
    token_secret_file: str = "var/token-secret"
    token_ttl: float = 4 * 3600.0  # default lifetime of issued playback tokens, seconds
    token_issuer: str = "mediaorigin"
    signed_url_secrets: str = ""  # CDN signed URLs: "kid:base64secret,..."
    # Amazon CloudFront in front: /stream?cdn=cloudfront signs URLs and cookies for it.
    cloudfront_domain: str = ""  # e.g. d111111abcdef8.cloudfront.net
    cloudfront_key_pair_id: str = ""
    cloudfront_private_key: str = ""  # path of the RSA private key (PEM)
    trusted_proxies: str = ""  # CIDRs whose X-Forwarded-For is honoured (no others)
    geoip_database: str = ""  # a MaxMind .mmdb (GeoLite2-Country or compatible)
    rules: str = ""  # global access rules, JSON (see README: Access rules)
    organization_rules: str = ""  # JSON {"org-id": rules, ...}: each organization's layer
    rate_limit: float = 0.0  # playback requests per second per client (burst 10x); 0 = off
    max_streams_per_user: int = 0  # concurrent sessions per token user (Redis); 0 = off
    stream_ttl: float = 60.0  # a session without requests this long frees its slot
    # Content keys are sealed under this key (32 bytes, base64); empty: generated once into
    # master_key_file.
    master_key: str = ""
    master_key_file: str = "var/master-key"
    key_rotation: int = 0  # HLS encryption: a new key every this many segments (0: one key)
    # Bootstrap admin API key. Empty: one is generated at first start into admin_key_file.
    admin_key: str = ""
    admin_key_file: str = "var/admin-key"
    # More API keys: "key:role[:organization],..." with role admin, instructor or student.
    api_keys: str = ""


@dataclass
class LibraryConfig:
    # sqlite:///path (relative to the config file) or postgresql://user@host/db
    url: str = "sqlite:///var/library.sqlite3"
    auto_migrate: bool = True  # bring the schema up to date at start (Alembic)
    public_url: str = ""  # prefix for URLs in API records ("" keeps them relative)
    max_upload_mb: int = 20480
    max_duration: float = 6 * 3600.0
    uploads_dir: str = "var/uploads"  # multipart spooling and tus uploads in progress
    upload_expiry_hours: float = 24.0  # unfinished tus uploads are removed after this


@dataclass
class ProcessingConfig:
    qualities: str = "1080p,720p,480p"  # default ladder; rungs above the source are skipped
    keyframe_interval: float = 2.0  # seconds, aligned across renditions
    preset: str = "veryfast"  # x264 preset
    passthrough: bool = True  # compliant H.264/AAC MP4 is served as uploaded
    max_keyframe_interval: float = 10.0  # passthrough needs keyframes at least this often
    thumbnails: int = 5  # default thumbnail count
    thumbnail_size: str = "640x360"
    sprite_interval: float = 10.0  # seconds between scrub-preview tiles; 0 disables
    preview_seconds: float = 6.0  # a short preview clip; 0 disables


@dataclass
class JobsConfig:
    backend: str = "inprocess"  # "inprocess" or "redis" (served by `mediaorigin worker`)
    concurrency: int = 1  # jobs at once per process
    run_in_server: bool = True  # with redis: the serve process also works on jobs
    claim_idle_seconds: float = 60.0  # a job silent this long is taken over (dead worker)


@dataclass
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"


@dataclass
class WebhooksConfig:
    urls: str = ""  # comma-separated receivers of media.ready, media.failed, job.progress
    secret: str = ""  # HMAC-SHA256 key for outgoing and incoming webhooks


@dataclass
class IngestConfig:
    rtmp_enabled: bool = True
    rtmp_host: str = "127.0.0.1"
    rtmp_port: int = 1935  # 0: any free port (tests)
    rtmp_timeout: float = 10.0  # a publisher silent this long is dropped
    rtmp_public_url: str = ""  # what /api/live answers; "": rtmp://<API host>:<port>/live
    # WebRTC (WHIP): the local addresses ICE gathers candidates on (comma-separated);
    # empty: every address of the machine.
    webrtc_hosts: str = "127.0.0.1"
    webrtc_keyframe_interval: float = 2.0  # seconds, for what WHIP ingest re-encodes


@dataclass
class LiveConfig:
    dir: str = "var/live"  # segments of live streams (DVR and recordings in progress)
    target_duration: float = 2.0  # seconds; segments are cut at the first keyframe after it
    part_target: float = 0.5  # LL-HLS partial segments, seconds
    window: int = 6  # segments in a live playlist without DVR
    dvr_window: float = 7200.0  # default DVR depth, seconds (per stream: dvrWindow)
    memory_segments: int = 12  # recent segments kept in memory; older ones are read from disk
    reconnect_grace: float = 30.0  # a publisher back within this continues the same lecture
    record: bool = True  # default for new streams
    blocking_timeout: float = 6.0  # LL-HLS blocking reload gives up after this


@dataclass
class AnalyticsConfig:
    enabled: bool = True  # playback events into the Redis stream of [redis] url
    server_events: bool = True  # one event per manifest and segment served
    buffer: int = 100000  # events kept while Redis is away; beyond, the oldest are dropped
    stream_maxlen: int = 1000000  # XADD MAXLEN ~: the stream is trimmed to about this
    max_beacon_events: int = 500  # events per beacon POST
    # Aggregate the stream in the serve process too (`mediaorigin worker` always does).
    aggregate_in_server: bool = True


@dataclass
class DemoConfig:
    enabled: bool = True  # generate and register a demo lecture at first start
    duration: float = 30.0


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    packaging: PackagingConfig = field(default_factory=PackagingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    library: LibraryConfig = field(default_factory=LibraryConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths resolve against it

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
        """Read a TOML file (optional) and apply environment overrides."""
        env = dict(os.environ) if env is None else env
        data: dict[str, Any] = {}
        base = Path.cwd()
        if path is not None:
            p = Path(path)
            try:
                data = tomllib.loads(p.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {p}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{p}: {e}") from None
            base = p.resolve().parent
        config = cls(base_dir=base)
        for section in _sections(cls):
            current = getattr(config, section)
            values = data.pop(section, {})
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table")
            for key, raw in values.items():
                _set(current, section, key, raw)
            prefix = f"MEDIAORIGIN_{section.upper()}_"
            for name, raw in env.items():
                if name.startswith(prefix):
                    _set(current, section, name[len(prefix):].lower(), raw, from_env=True)
        if data:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(data))}")
        config.validate()
        return config

    def validate(self) -> None:
        if self.server.loop not in ("asyncio", "uvloop"):
            raise ConfigError("server.loop must be 'asyncio' or 'uvloop'")
        if self.server.workers < 1:
            raise ConfigError("server.workers must be at least 1")
        if not 0.5 <= self.packaging.target_duration <= 60:
            raise ConfigError("packaging.target_duration must be between 0.5 and 60 seconds")
        if self.auth.playback not in ("open", "token"):
            raise ConfigError("auth.playback must be 'open' or 'token'")
        if self.jobs.backend not in ("inprocess", "redis"):
            raise ConfigError("jobs.backend must be 'inprocess' or 'redis'")
        if self.jobs.concurrency < 1:
            raise ConfigError("jobs.concurrency must be at least 1")
        if not 0.1 <= self.live.part_target <= self.live.target_duration <= 30:
            raise ConfigError("live.part_target must be 0.1 s or more and at most "
                              "live.target_duration, itself at most 30 s")
        if not 0.5 <= self.processing.keyframe_interval <= 20:
            raise ConfigError("processing.keyframe_interval must be between 0.5 and 20 seconds")
        an = self.analytics
        if an.buffer < 1 or an.stream_maxlen < 1 or not 1 <= an.max_beacon_events <= 10000:
            raise ConfigError("analytics.buffer and analytics.stream_maxlen must be at least 1, "
                              "analytics.max_beacon_events between 1 and 10000")


def _sections(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name != "base_dir"]


def _set(section_obj: Any, section: str, key: str, raw: Any, from_env: bool = False) -> None:
    hints = get_type_hints(type(section_obj))
    if key not in hints:
        if from_env:
            raise ConfigError(f"unknown setting MEDIAORIGIN_{section.upper()}_{key.upper()}")
        raise ConfigError(f"unknown setting {section}.{key}")
    kind = hints[key]
    try:
        value = _coerce(kind, raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{section}.{key}: expected {kind.__name__}, got {raw!r}") from None
    setattr(section_obj, key, value)


def _coerce(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if kind is int:
        if isinstance(raw, bool):
            raise ValueError(raw)
        return int(raw)
    if kind is float:
        return float(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise TypeError(raw)
        return raw
    raise TypeError(kind)
