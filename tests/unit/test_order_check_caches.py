"""What the order-check API keeps between requests, and when it lets go: a token Airflow
accepted is kept for a few seconds and never past its own expiry (a logout reaches the check
within that bound), by its hash, a bounded number of them; the ``rule_set_version`` tag is
the tag of the rule book the answer was decided with — a new book (a promotion) is tagged
anew, never served the previous book's tag."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orderflow.ordercheck.api import VerifiedTokens
from orderflow.ordercheck.service import TAGGED_SETS, rule_set_version
from orderflow.rules import load

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_is_kept_for_the_recheck_interval_then_asked_again():
    clock = Clock()
    tokens = VerifiedTokens(recheck_s=5.0, clock=clock)
    assert tokens.get("tok-a") is None
    tokens.put("tok-a", "sam.sales", "viewer", exp=clock.now + 3600)
    assert tokens.get("tok-a") == ("sam.sales", "viewer")
    clock.now += 4.9
    assert tokens.get("tok-a") == ("sam.sales", "viewer")
    clock.now += 0.2  # past the recheck interval: Airflow is asked again (revocation)
    assert tokens.get("tok-a") is None
    assert len(tokens) == 0


def test_a_token_is_never_kept_past_its_expiry():
    clock = Clock()
    tokens = VerifiedTokens(recheck_s=5.0, clock=clock)
    tokens.put("tok-b", "sam.sales", "viewer", exp=clock.now + 1.0)
    assert tokens.get("tok-b") is not None
    clock.now += 1.0
    assert tokens.get("tok-b") is None


def test_only_the_same_token_hits_and_the_tokens_kept_are_bounded():
    clock = Clock()
    tokens = VerifiedTokens(recheck_s=60.0, size=3, clock=clock)
    for n in range(5):
        tokens.put(f"tok-{n}", f"user{n}", None, exp=None)
    assert len(tokens) == 3
    assert tokens.get("tok-0") is None and tokens.get("tok-1") is None  # least recent gone
    assert tokens.get("tok-4") == ("user4", None)
    assert tokens.get("tok-4x") is None and tokens.get("tok-") is None
    assert not any(b"tok-" in key for key in tokens._entries)  # kept by hash, not the token


def test_the_tag_is_the_books_own_and_a_new_book_is_tagged_anew():
    book = load(at=AT)
    assert rule_set_version(book) == book.tag(*TAGGED_SETS)
    assert rule_set_version(book) is rule_set_version(book)  # once per book
    promoted = book.replace(book.credit.model_copy(update={"version": "2026.12.9"}))
    tag = rule_set_version(promoted)
    assert tag == promoted.tag(*TAGGED_SETS) != rule_set_version(book)
    assert "credit@2026.12.9#" in tag


@pytest.mark.parametrize("books", [20])
def test_the_tags_kept_are_bounded(books):
    from orderflow.ordercheck import service

    book = load(at=AT)
    for n in range(books):
        b = book.replace(book.credit.model_copy(update={"version": f"9.{n}"}))
        assert f"credit@9.{n}#" in rule_set_version(b)
    assert len(service._TAGS) <= 8


def test_the_env_gated_profiler_writes_stats_pstats_reads(tmp_path):
    import pstats

    from orderflow.ordercheck.api import _Profiler

    profiler = _Profiler(str(tmp_path / "prof"), every=2)
    assert [profiler.run(lambda n=n: sum(range(1000 * n))) for n in (1, 2, 3)] == [
        sum(range(1000)),
        sum(range(2000)),
        sum(range(3000)),
    ]
    stats = pstats.Stats(profiler.path)  # dumped after the second profiled request
    assert stats.total_calls > 0
