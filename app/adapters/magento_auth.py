"""How magqb proves itself to Magento's REST API: OAuth 1.0a, or a Bearer token.

Magento >= 2.4.4 refuses an integration's access token as a Bearer token unless the store allows it
(`oauth/consumer/enable_integration_as_bearer`, which Adobe advises against). An integration signs
its requests with OAuth 1.0a, HMAC-SHA256, with the four credentials the integration page shows.
With all four set every call is signed; with only `MAGENTO_ACCESS_TOKEN` it is a Bearer token
(an admin token, or a store that allows it).

The signature is oauthlib's (its base string, its percent-encoding of `searchCriteria[...]`): the
URL signed is the URL sent, byte for byte, so nothing between here and the socket may re-encode it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, SIGNATURE_TYPE_AUTH_HEADER
from oauthlib.oauth1 import Client as OAuth1Client
from pydantic import SecretStr

from app import redact

OAUTH_SETTINGS = ("MAGENTO_CONSUMER_KEY", "MAGENTO_CONSUMER_SECRET", "MAGENTO_ACCESS_TOKEN",
                  "MAGENTO_ACCESS_TOKEN_SECRET")


class MagentoAuthError(ValueError):
    """The Magento credentials are incomplete; the message names what to set."""


class MagentoAuth(Protocol):
    @property
    def kind(self) -> str:
        """How requests are authenticated, for log lines."""

    def headers(self, method: str, url: str) -> dict[str, str]:
        """The headers that authenticate one request of `url` (the exact, already encoded URL sent)."""

    def refused(self, status: int) -> str:
        """One operator line for Magento's 401/403: what to check."""


@dataclass(frozen=True)
class BearerAuth:
    token: SecretStr
    kind: str = "Bearer"

    def headers(self, method: str, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.get_secret_value()}"}

    def refused(self, status: int) -> str:
        return (f"Magento refused the Bearer token (HTTP {status}): check MAGENTO_ACCESS_TOKEN and the integration's "
                "access to Sales. Magento >= 2.4.4 refuses integration tokens as Bearer tokens: set "
                "MAGENTO_CONSUMER_KEY, MAGENTO_CONSUMER_SECRET and MAGENTO_ACCESS_TOKEN_SECRET too (OAuth 1.0a)")


@dataclass(frozen=True)
class OAuth1Auth:
    consumer_key: str
    consumer_secret: SecretStr
    access_token: SecretStr
    access_token_secret: SecretStr
    kind: str = "OAuth 1.0a"

    def headers(self, method: str, url: str) -> dict[str, str]:
        # A new client each call: oauthlib draws a fresh nonce and timestamp for every signature.
        client = OAuth1Client(self.consumer_key, client_secret=self.consumer_secret.get_secret_value(),
                              resource_owner_key=self.access_token.get_secret_value(),
                              resource_owner_secret=self.access_token_secret.get_secret_value(),
                              signature_method=SIGNATURE_HMAC_SHA256, signature_type=SIGNATURE_TYPE_AUTH_HEADER)
        _, headers, _ = client.sign(url, http_method=method)
        return {"Authorization": headers["Authorization"]}

    def refused(self, status: int) -> str:
        # Magento answers every OAuth failure (signature, stale timestamp, reused nonce) with the same
        # "consumer isn't authorized": the line names all that can cause it.
        return (f"Magento refused the OAuth 1.0a signature (HTTP {status}): check MAGENTO_CONSUMER_KEY, "
                "MAGENTO_CONSUMER_SECRET, MAGENTO_ACCESS_TOKEN and MAGENTO_ACCESS_TOKEN_SECRET against System > "
                "Extensions > Integrations (re-authorizing an integration issues new tokens), the integration's "
                "access to Sales, and this host's clock (Magento refuses a timestamp more than 600 s off)")


def magento_auth(consumer_key: str, consumer_secret: SecretStr, access_token: SecretStr,
                 access_token_secret: SecretStr) -> MagentoAuth:
    """OAuth 1.0a when all four credentials are set, Bearer with the access token alone."""
    values = {"MAGENTO_CONSUMER_KEY": consumer_key.strip(),
              "MAGENTO_CONSUMER_SECRET": consumer_secret.get_secret_value().strip(),
              "MAGENTO_ACCESS_TOKEN": access_token.get_secret_value().strip(),
              "MAGENTO_ACCESS_TOKEN_SECRET": access_token_secret.get_secret_value().strip()}
    redact.register_permanent(*(v for k, v in values.items() if k != "MAGENTO_CONSUMER_KEY" and v))
    missing = [name for name, value in values.items() if not value]
    if not missing:
        return OAuth1Auth(consumer_key.strip(), consumer_secret, access_token, access_token_secret)
    if missing == [n for n in OAUTH_SETTINGS if n != "MAGENTO_ACCESS_TOKEN"]:
        return BearerAuth(access_token)
    if len(missing) == len(OAUTH_SETTINGS):
        raise MagentoAuthError("no Magento credentials: set MAGENTO_CONSUMER_KEY, MAGENTO_CONSUMER_SECRET, "
                               "MAGENTO_ACCESS_TOKEN and MAGENTO_ACCESS_TOKEN_SECRET (System > Extensions > "
                               "Integrations: the integration's four values)")
    raise MagentoAuthError(f"incomplete OAuth 1.0a credentials: {', '.join(missing)} not set (OAuth needs all four "
                           "of the integration's values; a Bearer token needs MAGENTO_ACCESS_TOKEN alone)")
