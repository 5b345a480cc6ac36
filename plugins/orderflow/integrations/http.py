"""The base of every OrderFlow HTTP hook: JSON calls with idempotency keys and retries of
transient failures only.

Transient: connection errors, timeouts, 5xx and 429 — retried with exponential backoff and
jitter (tenacity, which the HTTP provider already uses). Anything else (4xx) is the partner
telling us no: it is raised at once as :class:`ExternalRejected`, with the partner's words.
The requests session is built once per hook (one Connection lookup, pooled sockets), not once
per call as ``HttpHook.run`` does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook

H = TypeVar("H", bound="OrderFlowHttpHook")


class ExternalSystemError(Exception):
    """A call to an external system failed. ``transient`` says whether a retry may help."""

    transient = False

    def __init__(self, system: str, endpoint: str, message: str, status: int | None = None):
        super().__init__(f"{system} {endpoint}: {message}")
        self.system, self.endpoint, self.status = system, endpoint, status


class ExternalRejected(ExternalSystemError):
    """The system answered 4xx: fix the request (or the data), do not retry."""


class ExternalUnavailable(ExternalSystemError):
    """5xx, 429, timeout or connection failure, still failing after the retry budget."""

    transient = True


class OrderFlowHttpHook(HttpHook):
    """JSON over HTTP to one external system, through its Airflow Connection.

    :param conn_id: the system's HTTP Connection (host = base URL). Defaults to the subclass's
        ``default_conn_name``. Extras read by name: ``timeout`` (seconds per request).
    :param retries: attempts for transient failures (default 4: ≈ 0.5 + 1 + 2 s of backoff,
        enough to ride out a restart, short enough to keep a task inside its slot).
    :param backoff: first backoff in seconds; doubles per attempt, with jitter, capped at 10 s.
    """

    system = "external system"
    default_conn_name = "http_default"

    def __init__(self, conn_id: str | None = None, *, retries: int = 4, backoff: float = 0.5):
        super().__init__(method="GET", http_conn_id=conn_id or self.default_conn_name)
        self.retries = retries
        self.backoff = backoff
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._settings: dict[str, dict[str, Any]] = {}

    def session(self) -> requests.Session:
        if self._session is None:
            with self._session_lock:  # one Connection lookup when threads share the hook
                if self._session is None:
                    # also resolves base_url and the Connection extras
                    self._session = self.get_conn()
        return self._session

    def run_and_check(
        self,
        session: requests.Session,
        prepped_request: requests.PreparedRequest,
        extra_options: dict[Any, Any],
    ) -> Any:
        """``HttpHook.run_and_check`` with the environment's settings for a request (proxies,
        CA bundle: ``Session.merge_environment_settings``) worked out once per origin of the
        hook's session, not once per request: that walks ``os.environ`` (every variable,
        for the proxies and ``no_proxy``) — in a task process about as much CPU as the
        request itself. What it reads depends on the URL's scheme, host and port only."""
        origin = _origin(prepped_request.url)
        settings = self._settings.get(origin)
        if settings is None:
            settings = self._settings[origin] = session.merge_environment_settings(
                prepped_request.url,
                proxies=session.proxies,
                stream=session.stream,
                verify=session.verify,
                cert=session.cert,
            )
        try:
            response = session.send(
                prepped_request,
                timeout=extra_options.get("timeout"),
                allow_redirects=extra_options.get("allow_redirects", True),
                **settings,
            )
            if extra_options.get("check_response", True):
                self.check_response(response)
            return response
        except requests.ConnectionError as ex:
            self.log.warning("%s Tenacity will retry to execute the operation", ex)
            raise

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """One request; returns the decoded JSON body."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        if idempotency_key:
            hdrs["Idempotency-Key"] = idempotency_key

        def attempt() -> Any:
            session = self.session()
            request = requests.Request(
                method.upper(),
                self.url_from_endpoint(endpoint),
                params=params,
                json=json,
                data=data,
                headers=hdrs,
            )
            options = {**self.merged_extra, "check_response": False}
            options.setdefault("timeout", 10)
            try:
                response = self.run_and_check(session, session.prepare_request(request), options)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                raise ExternalUnavailable(
                    self.system, endpoint, f"{type(exc).__name__}: {exc}"
                ) from exc
            if response.status_code >= 500 or response.status_code == 429:
                raise ExternalUnavailable(
                    self.system, endpoint, f"HTTP {response.status_code}", response.status_code
                )
            if response.status_code >= 400:
                try:
                    detail = response.json().get("detail", response.text)
                except ValueError:
                    detail = response.text
                raise ExternalRejected(
                    self.system,
                    endpoint,
                    f"HTTP {response.status_code}: {detail}",
                    response.status_code,
                )
            try:
                return response.json()
            except ValueError as exc:  # a 200 with a broken body: a truncated transfer
                raise ExternalUnavailable(
                    self.system, endpoint, "invalid JSON in response"
                ) from exc

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries),
            wait=tenacity.wait_exponential_jitter(initial=self.backoff, max=10),
            retry=tenacity.retry_if_exception_type(ExternalUnavailable),
            reraise=True,
        )
        return retrying(attempt)


def _origin(url: str | None) -> str:
    """``scheme://host:port`` of a URL (what the environment's proxy settings depend on)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}"


# ------------------------------------------------------------------ hooks shared by a sender
_shared: dict[tuple[type, str], OrderFlowHttpHook] | None = None
_shared_lock = threading.Lock()


@contextlib.contextmanager
def shared_hooks() -> Iterator[None]:
    """Within this block :func:`hook` gives one hook (one Connection lookup, one pooled
    session) per system and Connection, shared by the sender's threads; outside it, a new
    hook per call."""
    global _shared
    with _shared_lock:
        outer, _shared = _shared, ({} if _shared is None else _shared)
    try:
        yield
    finally:
        with _shared_lock:
            _shared = outer


def hook(cls: type[H], conn_id: str) -> H:
    """The hook of ``cls`` on ``conn_id``: shared inside :func:`shared_hooks`, else new."""
    cache = _shared
    if cache is None:
        return cls(conn_id)
    with _shared_lock:
        found = cache.get((cls, conn_id))
        if found is None:
            found = cache[(cls, conn_id)] = cls(conn_id)
    return found  # type: ignore[return-value]
