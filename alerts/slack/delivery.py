"""Posting to Slack's incoming webhook with ``slack_sdk.webhook.WebhookClient``.

The webhook URL comes only from ``SLACK_WEBHOOK_URL`` and is never logged or put in an error: the
client gets its own logger held at WARNING (slack_sdk logs the URL at DEBUG/INFO otherwise), and every
error text is scrubbed of it and of its parts (path, token; raw or URL-quoted). Within one send, 429 is retried after exactly the ``Retry-After`` seconds
Slack asks for, any 5xx and connection errors with exponential backoff; what still fails is reported
to the caller, which keeps the message in the outbox (see :mod:`alerts.slack.notifier`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import RemoteDisconnected
from typing import Any, Protocol
from urllib.error import URLError
from urllib.parse import quote, urlsplit

from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

ENV_VAR = "SLACK_WEBHOOK_URL"


class SlackConfigError(RuntimeError):
    """No webhook is configured (``SLACK_WEBHOOK_URL`` is unset or not an http(s) URL)."""


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send (after the in-call retries); ``error`` never contains the URL."""

    ok: bool
    status: int | None = None
    error: str | None = None
    connection_failed: bool = False


class Sender(Protocol):
    def send(self, payload: dict[str, Any]) -> SendResult: ...


class _NoJitter(Jitter):
    def recalculate(self, duration: float) -> float:
        return duration


class RetryAfterHandler(RetryHandler):
    """429: wait exactly the ``Retry-After`` seconds (capped at ``max_wait``), then try again."""

    def __init__(self, max_retry_count: int = 3, max_wait: float = 60.0, sleep: Callable[[float], None] = time.sleep):
        super().__init__(max_retry_count)
        self.max_wait = max_wait
        self.sleep = sleep
        self.waits: list[float] = []

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = 1.0
        for name, values in (response.headers if response else {}).items():
            if name.lower() == "retry-after":
                try:
                    wait = float(values[0] if isinstance(values, list) else values)
                except (TypeError, ValueError):
                    wait = 1.0
        wait = min(max(wait, 0.0), self.max_wait)
        self.waits.append(wait)
        state.next_attempt_requested = True
        self.sleep(wait)
        state.increment_current_attempt()


class ServerErrorHandler(RetryHandler):
    """Any 5xx (slack_sdk's own handler only knows 500 and 503), with exponential backoff."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code < 600


class ConnectionHandler(RetryHandler):
    """Refused/reset connections and timeouts (no HTTP response at all), with exponential backoff."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is None and isinstance(error, URLError | ConnectionError | RemoteDisconnected | TimeoutError)


def _quiet_logger() -> logging.Logger:
    # slack_sdk logs the full URL at DEBUG and on retries at INFO when its logger's level is <= DEBUG.
    logger = logging.getLogger("pulso.alerts.slack.webhook")
    logger.setLevel(logging.WARNING)
    return logger


def _secret_parts(url: str) -> list[str]:
    """The webhook URL and every part of it that could identify it (path, query, each path segment but
    ``services``), also URL-quoted, longest first: an error text (a proxy's page echoing the request
    path, an exception naming it) has them all replaced."""
    parts = urlsplit(url)
    pieces = {url, parts.path, parts.query, f"{parts.path}?{parts.query}"}
    pieces |= {segment for segment in parts.path.split("/") if segment != "services"}
    out = {form for piece in pieces if len(piece) >= 4 for form in (piece, quote(piece), quote(piece, safe=""))}
    return sorted(out, key=len, reverse=True)


class SlackWebhookSender:
    """Sends Block Kit payloads to the webhook in ``SLACK_WEBHOOK_URL`` (or ``url``, for tests)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 5.0,
        max_retries: int = 3,
        backoff_factor: float = 0.5,
        max_retry_after: float = 60.0,
    ):
        url = url or os.environ.get(ENV_VAR, "")
        if not url.startswith(("http://", "https://")):
            raise SlackConfigError(f"{ENV_VAR} is not set to an http(s) URL; Slack alerts stay in the outbox")
        self._url = url
        self._secrets = _secret_parts(url)
        backoff = BackoffRetryIntervalCalculator(backoff_factor=backoff_factor, jitter=_NoJitter())
        self.rate_limit = RetryAfterHandler(max_retry_count=max_retries, max_wait=max_retry_after)
        self._client = WebhookClient(
            url,
            timeout=int(max(1, timeout)),
            logger=_quiet_logger(),
            retry_handlers=[
                self.rate_limit,
                ServerErrorHandler(max_retries, backoff),
                ConnectionHandler(max_retries, backoff),
            ],
        )

    def __repr__(self) -> str:  # never show the secret URL
        return "SlackWebhookSender(<SLACK_WEBHOOK_URL>)"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<SLACK_WEBHOOK_URL>")
        return text[:200]

    def send(self, payload: dict[str, Any]) -> SendResult:
        """Post one message; returns ok=True only on HTTP 200."""
        try:
            response = self._client.send_dict(payload)
        except Exception as exc:  # noqa: BLE001 -- any transport failure keeps the message queued
            return SendResult(False, None, self._scrub(f"{type(exc).__name__}: {exc}"), connection_failed=True)
        if response.status_code == 200:
            return SendResult(True, 200)
        return SendResult(False, response.status_code, self._scrub(f"HTTP {response.status_code}: {response.body}"))
