"""Country of an IP address from a MaxMind database (GeoLite2/GeoIP2 Country or City, or any
.mmdb with the same `country` / `registered_country` layout).

Lookups read a memory-mapped file (or the C extension's mapping) and take microseconds, so
they run on the event loop; an LRU cache in front keeps repeat viewers off the tree walk.
"""

from __future__ import annotations

import functools
from ipaddress import IPv6Address, ip_address
from pathlib import Path
from typing import Any

import maxminddb

from mediaorigin.auth.client_ip import IPAddress


class GeoIP:
    """`GeoIP(path).country(ip)` → ISO 3166 alpha-2 code (`"GB"`) or None. Close when done."""

    def __init__(self, path: str | Path, cache_size: int = 65_536) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"GeoIP database not found: {self.path}")
        try:
            self._reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
        except (maxminddb.InvalidDatabaseError, OSError) as e:
            raise ValueError(f"not a MaxMind database: {self.path}: {e}") from e
        self._ipv4_only = self._reader.metadata().ip_version == 4
        # Per instance, so the cache never outlives (or keeps alive) its reader.
        self._cached = functools.lru_cache(maxsize=cache_size)(self._lookup)

    def country(self, ip: IPAddress | str) -> str | None:
        """The country's ISO code, else the registered country's; None when unknown.
        A string that is not an IP address raises ValueError."""
        addr = ip_address(ip) if isinstance(ip, str) else ip
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.version == 6 and self._ipv4_only:
            return None
        return self._cached(str(addr))

    def cache_info(self) -> Any:
        return self._cached.cache_info()

    def close(self) -> None:
        self._cached.cache_clear()
        self._reader.close()

    def __enter__(self) -> GeoIP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lookup(self, ip: str) -> str | None:
        record = self._reader.get(ip)
        if not isinstance(record, dict):
            return None
        for field in ("country", "registered_country"):
            entry = record.get(field)
            if isinstance(entry, dict):
                code = entry.get("iso_code")
                if isinstance(code, str) and code:
                    return code.upper()
        return None
