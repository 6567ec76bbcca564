"""Hosted-demo ("public") mode: what a visitor may do, decided from settings alone.

One setting switches it on: the environment variable ``SMALLCOVID_PUBLIC=1`` or
``public = true`` in ``.streamlit/secrets.toml``. Either one is enough (a host
that sets one cannot be overridden into private mode by the other). In public mode:

- training (the Train page) and server-folder browsing (Compare) are off unless the
  visitor enters the admin password (``SMALLCOVID_ADMIN_PASSWORD`` or
  ``admin_password`` in the secrets); with no password configured they are simply off;
- models installed from training jobs are hidden (only the shipped weights show);
- uploads are capped at ``SMALLCOVID_PUBLIC_MAX_UPLOAD_MB`` (or
  ``public_max_upload_mb`` in the secrets), default 50 MiB, and a Compare zip may
  unpack to at most 4x that (into the session's temporary folder only).

Pure functions over an environment mapping and a secrets mapping: no Streamlit
import here; ``pages/_shared.py`` passes ``os.environ`` and ``st.secrets``.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from typing import Mapping

from smallcovid.io import validate
from smallcovid.core.errors import InputFileError

_MIB = 1024 * 1024
DEFAULT_PUBLIC_UPLOAD_MB = 50
_TRUE = {"1", "true", "yes", "on"}

TRAINING_OFF = "Training is turned off in this public demo"
SERVER_PATHS_OFF = "Folders on the server are not available in this public demo"


def truthy(value: object) -> bool:
    """``True``/``1``/``"1"``/``"true"``/``"yes"``/``"on"`` (any case) -> True; anything else False."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    return str(value).strip().lower() in _TRUE if value is not None else False


def _positive_mb(raw: object) -> float | None:
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if value > 0 else None


@dataclass(frozen=True)
class Policy:
    """The effective hosting policy.

    Attributes:
        public: hosted-demo mode is on.
        max_upload_bytes: largest upload the app accepts (public cap, or the readers' limit).
        admin_password: the configured unlock password, or None (never shown in ``repr``).
    """

    public: bool = False
    max_upload_bytes: int = field(default_factory=lambda: validate.MAX_UPLOAD_BYTES)
    admin_password: str | None = field(default=None, repr=False)

    @property
    def max_unpacked_bytes(self) -> int | None:
        """Cap on what an uploaded zip may unpack to: 4x the upload cap in public mode, else the default."""
        return 4 * self.max_upload_bytes if self.public else None

    @property
    def can_unlock(self) -> bool:
        """Whether a password can unlock the admin features (public mode with a password set)."""
        return self.public and bool(self.admin_password)

    def password_ok(self, entered: str | None) -> bool:
        """Constant-time comparison of ``entered`` with the configured password (False when none is set)."""
        if not self.admin_password or not entered:
            return False
        return hmac.compare_digest(entered.encode("utf-8"), self.admin_password.encode("utf-8"))

    def admin_allowed(self, unlocked: bool = False) -> bool:
        """Training and server paths: always outside public mode, else only once unlocked."""
        return not self.public or (unlocked and self.can_unlock)

    def show_installed(self, unlocked: bool = False) -> bool:
        """Models installed from jobs are listed outside public mode, or for an unlocked admin."""
        return self.admin_allowed(unlocked)

    def check_upload(self, name: str, size: int) -> None:
        """Refuse an upload larger than :attr:`max_upload_bytes` before reading it.

        Raises:
            InputFileError: one sentence naming the file, its size and the limit.
        """
        if size > self.max_upload_bytes:
            where = "this public demo" if self.public else "this server"
            raise InputFileError(name, f"is {size / _MIB:.3g} MB; {where} accepts uploads of at most "
                                       f"{self.max_upload_bytes / _MIB:.3g} MB")


def load_policy(env: Mapping[str, str] | None = None, secrets: Mapping[str, object] | None = None) -> Policy:
    """The policy from environment variables and Streamlit secrets (either may be empty).

    Environment values win over secrets for the password and the upload cap; public
    mode is on when either source turns it on. A bad upload cap falls back to the default.
    """
    env = os.environ if env is None else env
    secrets = secrets or {}
    public = truthy(env.get("SMALLCOVID_PUBLIC")) or truthy(secrets.get("public"))
    password = env.get("SMALLCOVID_ADMIN_PASSWORD") or secrets.get("admin_password") or None
    password = str(password) if password else None
    general = validate.MAX_UPLOAD_BYTES
    if not public:
        return Policy(public=False, max_upload_bytes=general, admin_password=password)
    mb = (_positive_mb(env.get("SMALLCOVID_PUBLIC_MAX_UPLOAD_MB", ""))
          or _positive_mb(secrets.get("public_max_upload_mb", "")) or DEFAULT_PUBLIC_UPLOAD_MB)
    return Policy(public=True, max_upload_bytes=min(int(mb * _MIB), general), admin_password=password)
