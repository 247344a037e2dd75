"""Page views, written behind the answer: counted at once for the request, stored in batches.

No client waits for a page view to be acknowledged, so the page call does not wait for its
commit. A page call reads the visitor's row (one primary-key read), counts its page view
on it with `count_view` (a new visit after the visit timeout, the visit's traffic source,
the page view in the visitor state) and answers with the result; the view itself goes to
this process's `PageViewWriter`, which writes what came in during the last
`page_view_flush_ms` in one transaction of the group writer (server/store/group.py):
a few statements for the whole batch instead of four per view.

Until its batch is committed, a view is kept here, and the same visitor's next page call
on this worker counts it on top of what it reads: two page calls a moment apart see each
other, and so does a fragment URL fetched after them (`read`). A page call never waits for a batch being written: whether the row it read holds
that batch's views is told by the row itself (`_holds`: its last page view is as late as
theirs), so a returning visitor whose views are being committed is answered at once, not
after the commit (waiting was a page call's p99 at one connection: 10 ms against 2.4 ms).
The store applies the same `count_view` to the row it locks, so views of one visitor
written by several workers at once are all counted, none twice; what one worker's answer
may miss is another worker's views of the last moment.

The searches Vitrine serves are counted the same way (`count_search`): each process adds
them up by shop, day and term, and the next batch adds those numbers to the store's
(server/search_counts.py), in the same transaction as the views.

What a crash can lose: the page views of the last flush interval (50 ms by default) and
of a batch being written, on this worker. Never an event a client was answered 202 for:
event batches are committed before their answer (Store.record_events). If the store is
unavailable, views are kept and written again, at most `MAX_PENDING` of them; beyond
that the oldest are dropped and the log says how many.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

from server.models import Event, VisitorProfile
from server.search_counts import Tally, add_search, counted_term, merge
from server.store import VisitorForgotten
from server.visitors.state import EMPTY as EMPTY_STATE

if TYPE_CHECKING:
    from server.store import Store

log = logging.getLogger("vitrine")

MAX_BATCH = 1000  # page views one transaction writes
MAX_PENDING = 50_000  # page views kept while the store cannot take them
KEEP_COMMITTED_S = 10.0  # how long a visitor's entry outlives its last commit (see record())
MAX_SEARCH_KEYS = 10_000  # (shop, day, term) counts kept while the store cannot take them


@dataclass(frozen=True)
class PageView:
    shop: str
    visitor_id: str
    at: datetime
    visit_timeout_s: int
    country: str = ""
    device_class: str = ""
    source: str = ""  # this page's traffic medium
    event: Event | None = None  # the page_view event, stored with it
    # False: not a page view, only `events` to store for the visitor (their first exposure to
    # an experiment, server/measure/experiments.py): their profile is left as it is.
    counted: bool = True
    events: tuple[Event, ...] = ()  # stored with it, without changing the visitor state
    gpc: bool = False  # the browser sent Global Privacy Control
    # The page's explicit consent answer (server/consent/rules.py answer_key, None: none) and
    # where it came from: a change of it is added to the visitor's consent history.
    consent: str | None = None
    consent_source: str = ""
    # Where this page came from, kept for the visit it starts (server/traffic.py): the page's
    # path, the referrer's host, the source's name and the UTM campaign.
    path: str = ""
    referrer_domain: str = ""
    source_name: str = ""
    campaign: str = ""


def count_view(profile: VisitorProfile | None, view: PageView) -> VisitorProfile:
    """The visitor after this page view; `profile` None for a visitor not stored yet.

    A gap longer than the visit timeout starts a new visit. The visit's source is the
    medium of its first page (with its name, campaign and referrer); internal navigation keeps
    the source the visit began with. The visit's first page is its landing page."""
    if not view.counted and profile is not None:
        return profile
    views = 1 if view.counted else 0
    if profile is None:
        state = EMPTY_STATE.add([view.event]) if view.event else None
        return VisitorProfile(
            visitor_id=view.visitor_id, first_seen=view.at, last_seen=view.at, visits=1, page_views=views,
            country=view.country, device_class=view.device_class, source=view.source, new_visit=True,
            state=state, gpc=view.gpc, consent=view.consent, visit_page_views=views, landing_page=view.path,
            **(_arrival(view) if view.source != "internal" else {}),
        )
    new_visit = view.at - profile.last_seen > timedelta(seconds=view.visit_timeout_s)
    arrived = (new_visit or not profile.source) and view.source != "internal"  # this page says where from
    source = view.source if arrived else profile.source
    visit = _arrival(view) if arrived else {}
    if new_visit or not profile.landing_page:
        visit["landing_page"] = view.path
    if new_visit:
        visit["previous_seen"] = profile.last_seen
    state = profile.state
    if view.event is not None:
        state = (state or EMPTY_STATE).add([view.event])
    return dataclasses.replace(
        profile,
        last_seen=max(view.at, profile.last_seen),
        visits=profile.visits + (1 if new_visit else 0),
        page_views=profile.page_views + views,
        country=view.country or profile.country,
        device_class=view.device_class or profile.device_class,
        source=source,
        new_visit=new_visit,
        state=state,
        gpc=view.gpc,
        consent=view.consent or profile.consent,
        visit_page_views=views if new_visit else profile.visit_page_views + views,
        **visit,
    )


def _arrival(view: PageView) -> dict:
    """What a visit keeps of the page that tells where it came from."""
    return dict(referrer_domain=view.referrer_domain, source_name=view.source_name, utm_campaign=view.campaign)


def _holds(stored: VisitorProfile | None, batch: list[PageView]) -> bool:
    """Whether the visitor's row, as read, holds this batch of their views (one transaction:
    all of them or none). Committed, the batch made the row's last page view at least as late
    as its own latest (count_view); before, the row's is earlier, unless another worker wrote
    a later view meanwhile (then the batch is taken as written: the answer misses views of a
    moment ago, the store counts every one). A row with no page view (made by an event batch)
    holds none."""
    counted = [view.at for view in batch if view.counted]
    if not counted:
        return True  # events only: they change nothing a page call reads
    return stored is not None and stored.page_views > 0 and stored.last_seen >= max(counted)


@dataclass
class _Entry:
    """One visitor's views on this worker that are not committed yet."""

    views: list[PageView] = field(default_factory=list)  # waiting for a flush
    flying: list[PageView] = field(default_factory=list)  # taken by the flush not committed yet (one at a time)
    latest: datetime | None = None  # the latest counted view's time: each later one is later (_queue)
    committed_seq: int = -1  # the flush that last committed some of them
    committed_at: float = 0.0
    held: int = 0  # page calls reading the visitor that no flush may overtake

    @property
    def in_flight(self) -> int:
        return len(self.flying)


class PageViewWriter:
    """This process's page views on their way to the store (see the module docstring)."""

    def __init__(self, store: "Store", flush_interval_s: float = 0.05, wait_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        # How long a page call waits for its visitor's batch being written (the store's busy
        # timeout): past it, it counts on what it reads.
        self.wait_s = wait_s
        self._clock = clock
        self._cond = threading.Condition()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._pending = 0  # views waiting for a flush
        self._searches: Tally = {}  # searches counted since the last flush (count_search)
        self._searches_in_flight = False
        self._seq = 0  # flushes committed
        self._closing = False
        self._now = False  # write what is waiting without waiting for the interval (flush())
        self._thread: threading.Thread | None = None
        self.written = 0  # views committed (for tests and benchmarks)
        self.dropped = 0
        self.dropped_searches = 0

    # -- the request side ------------------------------------------------------------
    def record(self, view: PageView, known: bool = True) -> VisitorProfile:
        """Count the view for this request (what is stored, plus this worker's views not
        written yet) and queue it to be written. `known` False: the visitor id was made for
        this request (no valid token came), so nothing can be stored about it yet. Raises
        VisitorForgotten for a visitor deleted at their request."""
        key = (view.shop, view.visitor_id)
        if not known:
            with self._cond:
                return self._queue(key, self._entries.get(key), None, view)
        for _ in range(5):
            with self._cond:
                seq = self._seq
            stored = self.store.get_visitor(view.shop, view.visitor_id)
            with self._cond:
                entry = self._entries.get(key)
                if entry is not None and entry.committed_seq > seq:
                    # A batch of theirs was committed, and left the entry, during the read,
                    # which may have begun before that commit: read again (rare).
                    continue
                if stored is not None or entry is not None:
                    return self._queue(key, entry, stored, view)
            # No row and nothing queued: a first page view not written yet, or a visitor
            # deleted at their request whose token came back (rare either way).
            if self.store.is_forgotten(view.shop, view.visitor_id):
                raise VisitorForgotten(view.shop, view.visitor_id)
            with self._cond:
                return self._queue(key, self._entries.get(key), None, view)
        # The visitor's views kept being written under us: hold their next flush while reading.
        with self._cond:
            self._cond.wait_for(lambda: not self._writing(key), timeout=self.wait_s)
            entry = self._entries.setdefault(key, _Entry())
            entry.held += 1
        try:
            stored = self.store.get_visitor(view.shop, view.visitor_id)
        finally:
            with self._cond:
                entry.held -= 1
                profile = self._queue(key, entry, stored, view)
        return profile

    def read(self, shop: str, visitor_id: str) -> VisitorProfile | None:
        """The visitor as stored, with this worker's views of theirs not written yet counted
        on top, for a request that is no page view (a fragment URL): what it shows agrees
        with the page calls a moment before it. None for a visitor with neither."""
        key = (shop, visitor_id)
        stored = None
        for _ in range(5):
            with self._cond:
                seq = self._seq
            stored = self.store.get_visitor(shop, visitor_id)
            with self._cond:
                entry = self._entries.get(key)
                if entry is None:
                    return stored
                if entry.committed_seq > seq:
                    continue  # a batch of theirs committed during the read: read again (rare)
                return self._counted(entry, stored)
        return stored

    def add_events(self, shop: str, visitor_id: str, at: datetime, events: tuple[Event, ...]) -> None:
        """Queue events to store for a visitor whose page view this request counted (record):
        written with the next batch, in the order they came, after that view."""
        view = PageView(shop, visitor_id, at, 0, counted=False, events=events)
        with self._cond:
            self._queue((shop, visitor_id), self._entries.get((shop, visitor_id)), None, view)

    def count_search(self, shop: str, term: str, results: int, at: datetime) -> None:
        """Count a search served now (how many results it had) with the next batch: no
        statement on the request's time, no visitor id."""
        with self._cond:
            if len(self._searches) >= MAX_SEARCH_KEYS and (shop, at.date(), counted_term(term)) not in self._searches:
                self.dropped_searches += 1  # the store has not taken a batch for long: bounded memory
                return
            if add_search(self._searches, shop, at.date(), term, results):
                self._ensure_thread()
                self._cond.notify_all()

    def _waiting(self) -> bool:
        return bool(self._pending or self._searches)

    def _writing(self, key: tuple[str, str]) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.in_flight > 0

    def _queue(self, key: tuple[str, str], entry: _Entry | None, stored: VisitorProfile | None,
               view: PageView) -> VisitorProfile:
        if entry is None:
            entry = self._entries[key] = _Entry()
        profile = self._counted(entry, stored)
        if view.counted:
            # One visitor's views on this worker get strictly later times, in the order they are
            # counted (two request threads may stamp them the other way round): a batch being
            # written is always later than the row before it, which is what _holds reads.
            if entry.latest is not None and view.at <= entry.latest:
                view = dataclasses.replace(view, at=entry.latest + timedelta(microseconds=1))
            entry.latest = view.at
        profile = count_view(profile, view)
        entry.views.append(view)
        self._pending += 1
        self._ensure_thread()
        if self._pending == 1 or self._pending >= MAX_BATCH:
            self._cond.notify_all()
        return profile

    @staticmethod
    def _counted(entry: _Entry, stored: VisitorProfile | None) -> VisitorProfile | None:
        """The row read, with the entry's views that are not in it counted on top."""
        profile = stored
        if entry.flying and not _holds(stored, entry.flying):
            for flying in entry.flying:  # being written, and not in the row read
                profile = count_view(profile, flying)
        for waiting in entry.views:
            profile = count_view(profile, waiting)
        return profile

    # -- the writer ------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Write every view queued so far; True once they are all committed (tests, shutdown)."""
        deadline = self._clock() + timeout
        with self._cond:
            if not (self._waiting() or self._in_flight()):
                return True  # nothing to write (and no "now" left set for the next batch)
            target = self._seq + 1
            self._now = True
            self._cond.notify_all()
            while (self._waiting() or self._in_flight()) and self._clock() < deadline:
                if self._thread is None or not self._thread.is_alive():
                    break
                self._cond.wait(timeout=0.05)
            return self._seq >= target and not self._waiting() and not self._in_flight()

    def forget(self, shop: str, visitor_id: str) -> int:
        """Drop the visitor's views not written yet (their data is being deleted); a batch of
        theirs being written is waited for first, so the deletion comes after it. Returns
        how many were dropped."""
        key = (shop, visitor_id)
        with self._cond:
            self._cond.wait_for(lambda: not self._writing(key), timeout=self.wait_s)
            entry = self._entries.pop(key, None)
            dropped = len(entry.views) if entry else 0
            self._pending -= dropped
            return dropped

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        self.flush()
        with self._cond:
            self._closing = self._now = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _in_flight(self) -> bool:
        return self._searches_in_flight or any(e.in_flight for e in self._entries.values())

    def _ensure_thread(self) -> None:  # called with the condition held
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="vitrine-page-views", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting() or self._closing)
                if self._closing and not self._waiting():
                    return
            # Let the batch fill for one interval, unless it is full or a flush is asked for
            # (after a failure, longer each time: the store is not taking writes).
            with self._cond:
                self._cond.wait_for(lambda: self._now or (not failures and self._pending >= MAX_BATCH),
                                    timeout=min(2.0, self.flush_interval_s * (2 ** failures)))
                self._now = False
            batch, taken, searches = self._take()
            try:
                self.store.record_page_views(batch, searches=searches)
            except Exception as exc:  # noqa: BLE001 - the views are kept and written again
                failures = min(failures + 1, 6)
                log.warning("page views not written yet (%d kept): %s", len(batch), exc)
                self._give_back(taken, searches)
                continue
            failures = 0
            self._done(taken)

    def _take(self) -> tuple[list[PageView], dict[tuple[str, str], list[PageView]], Tally]:
        with self._cond:
            searches, self._searches = self._searches, {}
            self._searches_in_flight = bool(searches)
            batch: list[PageView] = []
            taken: dict[tuple[str, str], list[PageView]] = {}
            for key, entry in self._entries.items():
                if not entry.views or entry.held or len(batch) >= MAX_BATCH:
                    continue
                views, entry.views = entry.views, []
                entry.flying = views
                taken[key] = views
                batch += views
            self._pending -= len(batch)
            return batch, taken, searches

    def _done(self, taken: dict[tuple[str, str], list[PageView]]) -> None:
        with self._cond:
            self._seq += 1
            self._searches_in_flight = False
            now = self._clock()
            for key, views in taken.items():
                entry = self._entries[key]
                entry.flying = []
                entry.committed_seq, entry.committed_at = self._seq, now
                self.written += len(views)
            # An entry outlives its last commit a while, so that a page call whose read
            # began before that commit sees that it happened (record()).
            for key in [k for k, e in self._entries.items()
                        if not e.views and not e.in_flight and not e.held and now - e.committed_at > KEEP_COMMITTED_S]:
                del self._entries[key]
            self._cond.notify_all()

    def _give_back(self, taken: dict[tuple[str, str], list[PageView]], searches: Tally) -> None:
        with self._cond:
            self._searches = merge(searches, [self._searches])
            self._searches_in_flight = False
            for key, views in taken.items():
                entry = self._entries[key]
                entry.flying = []
                entry.views[:0] = views
                self._pending += len(views)
            if self._pending > MAX_PENDING:
                self._drop(self._pending - MAX_PENDING)
            self._cond.notify_all()

    def _drop(self, count: int) -> None:
        """Forget the oldest `count` waiting views (the store has been unavailable too long)."""
        dropped = 0
        for entry in sorted(self._entries.values(), key=lambda e: e.views[0].at if e.views else datetime.max):
            while entry.views and dropped < count:
                entry.views.pop(0)
                dropped += 1
        self._pending -= dropped
        self.dropped += dropped
        log.error("the store took no page view for too long: %d of them dropped", dropped)
