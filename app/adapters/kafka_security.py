"""How every Kafka client of magqb connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (PLAIN, SCRAM-SHA-256/512).

One setting for all of them — the ingress producer, the faust worker, the tools' consumers and admin clients —
registered by bootstrap address when the settings are loaded, so a helper that is handed only the address
(app.adapters.kafka_io, kafka_admin) connects as the worker does.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka.helpers import create_ssl_context

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """The Kafka security settings do not make a connection (a missing value, an unreadable file)."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None  # a secret: never printed (see __repr__)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def __repr__(self) -> str:
        return f"KafkaSecurity({self.protocol}, {self.mechanism or '-'}, user={self.username or '-'})"

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def check(self) -> None:
        """One line naming what is wrong, before any connection is tried."""
        if self.protocol not in PROTOCOLS:
            raise KafkaSecurityError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not "
                                     f"{self.protocol!r}")
        if self.uses_sasl:
            if self.mechanism not in MECHANISMS:
                raise KafkaSecurityError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)} with "
                                         f"{self.protocol}, not {self.mechanism!r}")
            missing = [n for n, v in (("KAFKA_SASL_USERNAME", self.username), ("KAFKA_SASL_PASSWORD", self.password))
                       if not v]
            if missing:
                raise KafkaSecurityError(f"{self.protocol} needs {' and '.join(missing)}")
        if self.uses_tls:
            self.ssl_context()  # the files are read now, not at the first connection
        if bool(self.certfile) != bool(self.keyfile):
            raise KafkaSecurityError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (a client certificate "
                                     "and its key)")

    def ssl_context(self) -> ssl.SSLContext:
        try:
            return create_ssl_context(cafile=self.cafile or None, certfile=self.certfile or None,
                                      keyfile=self.keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self.cafile, self.certfile, self.keyfile) if f) or "the system's CAs"
            raise KafkaSecurityError(f"the TLS files for Kafka cannot be used ({files}): "
                                     f"{exc.__class__.__name__}: {exc}") from None

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka's producer, consumer and admin client arguments."""
        if self.protocol == "PLAINTEXT":
            return {}
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs |= {"sasl_mechanism": self.mechanism, "sasl_plain_username": self.username,
                       "sasl_plain_password": self.password}
        return kwargs

    def faust_credentials(self) -> Any:
        """faust's broker_credentials (None for PLAINTEXT)."""
        import faust

        if self.uses_sasl:
            return faust.SASLCredentials(username=self.username, password=self.password, mechanism=self.mechanism,
                                         ssl_context=self.ssl_context() if self.uses_tls else None)
        if self.uses_tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


_REGISTERED: dict[str, KafkaSecurity] = {}


def register(bootstrap: str, security: KafkaSecurity) -> None:
    """How clients of `bootstrap` connect (called when the settings are loaded)."""
    _REGISTERED[_normal(bootstrap)] = security


def for_bootstrap(bootstrap: str) -> KafkaSecurity:
    return _REGISTERED.get(_normal(bootstrap), KafkaSecurity())


def client_kwargs(bootstrap: str) -> dict[str, Any]:
    return for_bootstrap(bootstrap).client_kwargs()


def _normal(bootstrap: str) -> str:
    return ",".join(sorted(h.strip() for h in bootstrap.split(",") if h.strip()))
