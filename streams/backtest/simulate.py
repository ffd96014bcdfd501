"""Sample tracking events (`leadscore simulate`), so a new user can try the backtest at once.

The population is made to exercise every kind of rule: behaviour segments with different
engagement (champions, engaged, lurkers, cold contacts who go silent, churners who
unsubscribe, late newcomers), attributes for fit rules (some contacts match the ideal customer
profile, some change an attribute later so fit points must be replaced), and silence long
enough for inactivity rules to fire.

With outcomes (`leadscore simulate --outcomes`), each contact converts or not by a latent
propensity that its simulated behaviour implies: its segment, whether it matches the ideal
customer profile, and its replies, pricing-page visits and demo requests raise it; churners
never convert. A converter buys a few days after its last such buying signal. So the events
carry a signal a plan can find, and `plans evaluate` and `plans fit` have a ground truth.

Events come out in time order without building the whole stream: every contact's event count
is fixed up front, each contact draws its own sorted event times one at a time (sequential
uniform order statistics), and a heap keyed by each contact's next time merges them. Memory is
O(contacts), whatever the number of events.
"""

from __future__ import annotations

import gzip
import heapq
import io
import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.models.events import CONTACT_UPDATED, TrackingEvent
from streams.models.outcomes import Conversion

SOURCE = "/leadscore/simulate"
"""CloudEvents `source` of every generated event."""
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0

Data = dict[str, Any]
Action = Callable[[random.Random], tuple[str, Data]]
"""Draws the type and data of one event."""
Window = Callable[[random.Random, float], tuple[float, float]]
"""Draws a contact's active span (offset from the start, length) within a period of seconds."""
Profile = tuple[str, str, str, str, bool]
"""job_title, region, city, source, consent_email."""

SITE = "https://example.com"
CAMPAIGNS = ("jan-newsletter", "product-launch", "webinar-invite", "case-study", "price-update")
BLOG = ("/blog/lead-scoring-101", "/blog/warm-leads", "/blog/kafka-at-scale", "/blog/release-2-0")
DOCS = ("/docs/quickstart", "/docs/rules", "/docs/api")
OFFERS = ("/offer/starter", "/offer/enterprise", "/offer/trial")
FORMS = ("demo-request", "contact-sales", "ebook-download", "webinar-signup")
LISTS = ("newsletter", "product-updates", "webinars")

ICP_TITLES = ("president", "prezes", "cto")
OTHER_TITLES = ("engineer", "marketing manager", "developer", "office manager", "student")
TITLES = ICP_TITLES + OTHER_TITLES
ICP_PLACE = ("Małopolskie", "Kraków")
PLACES = (
    ICP_PLACE,
    ("Małopolskie", "Tarnów"),
    ("Mazowieckie", "Warszawa"),
    ("Pomorskie", "Gdańsk"),
    ("Dolnośląskie", "Wrocław"),
    ("Wielkopolskie", "Poznań"),
    ("Śląskie", "Katowice"),
)
SOURCES = ("form", "import", "ads")

PROFILED_SHARE = 0.9
"""Contacts whose first event is a `contact.updated` with their attributes."""
ICP_SHARE = 0.15
"""Profiled contacts matching the ideal customer profile (the DESIGN's worked example)."""
CHANGED_SHARE = 0.2
"""Profiled contacts with at least four events who change one attribute later."""
CONSENT_SHARE = 0.6
"""Non-ICP contacts who consented to e-mail."""
_CHUNK = 65_536
"""Events allotted per `choices` call: bounds the temporary list for huge runs."""


def _opened(rng: random.Random) -> tuple[str, Data]:
    return "email.opened", {"campaign": rng.choice(CAMPAIGNS)}


_CLICK_URLS = tuple(SITE + path for path in ("/pricing", *OFFERS, *BLOG))


def _clicked(rng: random.Random) -> tuple[str, Data]:
    return "email.clicked", {"url": rng.choice(_CLICK_URLS), "campaign": rng.choice(CAMPAIGNS)}


def _replied(rng: random.Random) -> tuple[str, Data]:
    return "email.replied", {"campaign": rng.choice(CAMPAIGNS)}


def _form(rng: random.Random) -> tuple[str, Data]:
    return "form.submitted", {"form": rng.choice(FORMS)}


def _subscribed(rng: random.Random) -> tuple[str, Data]:
    return "list.subscribed", {"list": rng.choice(LISTS)}


def _unsubscribed(rng: random.Random) -> tuple[str, Data]:
    return "list.unsubscribed", {"list": "newsletter"}


def _visit(*paths: str) -> Action:
    urls = tuple(SITE + path for path in paths)

    def visit(rng: random.Random) -> tuple[str, Data]:
        return "page.visited", {"url": rng.choice(urls)}

    return visit


_pricing = _visit("/pricing")
_offer = _visit(*OFFERS)
_blog = _visit(*BLOG)
_docs = _visit(*DOCS)


def _mix(*weighted: tuple[Action, int]) -> tuple[Action, ...]:
    """Repeat each action by its weight, so one `rng.choice` picks by weight."""
    return tuple(action for action, weight in weighted for _ in range(weight))


def _whole(rng: random.Random, period: float) -> tuple[float, float]:
    return 0.0, period


def _early_burst(rng: random.Random, period: float) -> tuple[float, float]:
    """Up to a week of activity inside the first third: two thirds of silence follow."""
    burst = min(7 * DAY, period / 3)
    return rng.random() * (period / 3 - burst), burst


def _until_churn(rng: random.Random, period: float) -> tuple[float, float]:
    return 0.0, period * rng.uniform(0.25, 1.0)


def _late(rng: random.Random, period: float) -> tuple[float, float]:
    offset = period * rng.uniform(0.6, 0.9)
    return offset, period - offset


@dataclass(frozen=True, slots=True)
class Segment:
    """A behaviour pattern: how many contacts follow it, how active they are, and how."""

    name: str
    share: float
    """Fraction of contacts."""
    volume: float
    """Relative number of events per contact."""
    mix: tuple[Action, ...]
    window: Window
    heating: float = 1.0
    """Exponent on event times: below 1 crowds activity towards the end (a lead warming up)."""
    ends_with: Action | None = None
    """The last event of every contact in the segment (with at least two events)."""


SEGMENTS = (
    Segment(
        "champion", 0.05, 8.0,
        _mix((_opened, 5), (_clicked, 4), (_replied, 2), (_pricing, 3), (_offer, 2), (_docs, 2),
             (_form, 2)),
        _whole, heating=0.6,
    ),
    Segment(
        "engaged", 0.20, 3.0,
        _mix((_opened, 8), (_clicked, 4), (_blog, 4), (_docs, 2), (_pricing, 1), (_replied, 1),
             (_form, 1), (_subscribed, 1)),
        _whole,
    ),
    Segment("lurker", 0.30, 1.0, _mix((_opened, 1)), _whole),
    Segment(
        "cold", 0.25, 0.15, _mix((_opened, 3), (_clicked, 1), (_blog, 1), (_subscribed, 1)),
        _early_burst,
    ),
    Segment(
        "churner", 0.15, 1.2, _mix((_opened, 6), (_clicked, 2), (_blog, 2)), _until_churn,
        ends_with=_unsubscribed,
    ),
    Segment(
        "newcomer", 0.05, 2.0,
        _mix((_opened, 3), (_clicked, 2), (_blog, 2), (_form, 2), (_subscribed, 1), (_pricing, 1)),
        _late,
    ),
)  # fmt: skip
_CUM_SHARES = tuple(itertools.accumulate(segment.share for segment in SEGMENTS))


class _Contact:
    """Generation state of one contact; `u` is its last event's position in [0, 1)."""

    __slots__ = (
        "change_at",
        "emitted",
        "icp",
        "last_event",
        "last_signal",
        "length",
        "offset",
        "profile",
        "segment",
        "signals",
        "total",
        "u",
    )

    def __init__(
        self, segment: Segment, offset: float, length: float, profile: Profile | None
    ) -> None:
        self.segment = segment
        self.icp = profile is not None and profile[0] in ICP_TITLES and profile[1:3] == ICP_PLACE
        self.signals: dict[str, int] = {}
        """Buying signals so far, by kind (`_signal`)."""
        self.last_signal: float | None = None
        self.last_event: float | None = None
        self.offset = offset
        self.length = length
        self.profile = profile
        self.total = 0
        self.emitted = 0
        self.u = 0.0
        self.change_at = -1


def generate(
    contacts: int,
    events: int,
    *,
    seed: int = 7,
    start: float = DEFAULT_START,
    days: float = 90.0,
) -> Iterator[TrackingEvent]:
    """Exactly `events` events of `contacts` contacts in non-decreasing time order.

    Deterministic for a seed. Times lie in [start, start + days] at millisecond precision.
    Every contact gets an event when `events >= contacts`. Cold contacts are silent for the
    last two thirds of the period (more than 30 days with the default 90).
    """
    return Simulation(contacts, events, seed=seed, start=start, days=days).events()


class Simulation:
    """A population's events and, once every event is out, who converted and when.

    The conversions are drawn with their own random generator after the events, so a file of
    events is the same with or without `--outcomes`."""

    def __init__(
        self,
        contacts: int,
        events: int,
        *,
        seed: int = 7,
        start: float = DEFAULT_START,
        days: float = 90.0,
    ) -> None:
        if contacts < 0 or events < 0:
            raise ValueError("contacts and events must not be negative")
        if events and not contacts:
            raise ValueError("events need at least one contact")
        if not days > 0:
            raise ValueError("days must be positive")
        self._people: list[_Contact] = []
        self._seed = seed
        self._stream = _events(contacts, events, seed, start, days * DAY, self._people)
        self._done = False

    def events(self) -> Iterator[TrackingEvent]:
        yield from self._stream
        self._done = True

    def conversions(self) -> list[Conversion]:
        """Each converter's conversion, in contact order; only after `events` is exhausted."""
        if not self._done:
            raise RuntimeError("the conversions are known once every event is out")
        rng = random.Random(f"{self._seed}-outcomes")
        converted = []
        for index, person in enumerate(self._people):
            if person.last_event is None or rng.random() >= propensity(person):
                continue
            bought_after = (
                person.last_signal if person.last_signal is not None else person.last_event
            )
            converted.append(
                Conversion(
                    f"c-{index:06d}",
                    round(bought_after + rng.uniform(1.0, 14.0) * DAY, 3),
                    float(round(rng.lognormvariate(8.5, 0.6))),
                )
            )
        return converted


SEGMENT_LOGIT = {"champion": -2.8, "engaged": -4.0, "lurker": -5.0, "cold": -5.5, "newcomer": -3.8}
"""A contact's log-odds of converting before its signals; churners (absent) never convert."""
SIGNAL_LOGIT = {"icp": 2.0, "replied": 0.7, "pricing": 0.5, "demo": 1.2}
"""What each signal adds to the log-odds: matching the ICP, and each reply, pricing visit and
demo request (at most `SIGNAL_CAP` of each count)."""
SIGNAL_CAP = 3


def propensity(person: _Contact) -> float:
    """The chance that the contact converts, from everything it did and is."""
    base = SEGMENT_LOGIT.get(person.segment.name)
    if base is None:
        return 0.0
    logit = base + (SIGNAL_LOGIT["icp"] if person.icp else 0.0)
    for kind, count in person.signals.items():
        logit += SIGNAL_LOGIT[kind] * min(count, SIGNAL_CAP)
    return 1.0 / (1.0 + math.exp(-logit))


def _signal(event_type: str, data: Data) -> str | None:
    """The kind of buying signal an event is, if any."""
    if event_type == "email.replied":
        return "replied"
    if event_type == "page.visited" and str(data.get("url", "")).endswith("/pricing"):
        return "pricing"
    if event_type == "form.submitted" and data.get("form") == "demo-request":
        return "demo"
    return None


def _events(
    contacts: int,
    events: int,
    seed: int,
    start: float,
    period: float,
    people: list[_Contact],
) -> Iterator[TrackingEvent]:
    """The events; `people` is filled with the population, for the conversions."""
    rng = random.Random(seed)
    people.extend(_population(rng, contacts, events, period))
    heap = [
        (_next_time(rng, person, start), index)
        for index, person in enumerate(people)
        if person.total
    ]
    heapq.heapify(heap)
    for number in range(events):  # the counts sum to `events`: the heap empties just in time
        time, index = heap[0]
        person = people[index]
        event_type, data = _body(rng, person)
        person.last_event = time
        signal = _signal(event_type, data)
        if signal is not None:
            person.signals[signal] = person.signals.get(signal, 0) + 1
            person.last_signal = time
        person.emitted += 1
        if person.emitted < person.total:
            heapq.heapreplace(heap, (_next_time(rng, person, start), index))
        else:
            heapq.heappop(heap)
        yield TrackingEvent(f"{seed}-{number}", SOURCE, event_type, time, f"c-{index:06d}", data)


def _population(rng: random.Random, contacts: int, events: int, period: float) -> list[_Contact]:
    """Contacts with their segment, span and profile, and an event count each summing to `events`.

    One event each when there are enough (a contact without events does not exist in the
    data), the rest drawn in proportion to segment volume times a log-normal personal factor.
    """
    people: list[_Contact] = []
    weights: list[float] = []
    for _ in range(contacts):
        segment = rng.choices(SEGMENTS, cum_weights=_CUM_SHARES)[0]
        offset, length = segment.window(rng, period)
        profiled = rng.random() < PROFILED_SHARE
        profile = _profile(rng, icp=rng.random() < ICP_SHARE) if profiled else None
        people.append(_Contact(segment, offset, length, profile))
        weights.append(segment.volume * rng.lognormvariate(0.0, 0.5))
    base = 1 if events >= contacts else 0
    for person in people:
        person.total = base
    cum_weights = list(itertools.accumulate(weights))
    rest = events - base * contacts
    while rest:
        chunk = min(rest, _CHUNK)
        for index in rng.choices(range(contacts), cum_weights=cum_weights, k=chunk):
            people[index].total += 1
        rest -= chunk
    for person in people:
        if person.profile is not None and person.total >= 4 and rng.random() < CHANGED_SHARE:
            person.change_at = rng.randrange(1, person.total - 1)
    return people


def _next_time(rng: random.Random, person: _Contact, start: float) -> float:
    """The next of the contact's remaining sorted uniform times, mapped into its span.

    The minimum of m uniforms on [u, 1) is 1 - (1 - u) * V ** (1 / m) for V uniform on (0, 1].
    Rounding to milliseconds is monotone, so each contact's times stay sorted.
    """
    remaining = person.total - person.emitted
    person.u = 1.0 - (1.0 - person.u) * (1.0 - rng.random()) ** (1.0 / remaining)
    position: float = person.u**person.segment.heating  # float ** float is Any to mypy
    return round(start + person.offset + person.length * position, 3)


def _body(rng: random.Random, person: _Contact) -> tuple[str, Data]:
    """Type and data of the contact's next event, from its position in its own history."""
    if person.profile is not None:
        if person.emitted == 0:
            return CONTACT_UPDATED, _attributes(person.profile)
        if person.emitted == person.change_at:
            person.profile = _changed(rng, person.profile)
            return CONTACT_UPDATED, _attributes(person.profile)
    ends_with = person.segment.ends_with
    if ends_with is not None and person.emitted == person.total - 1:
        return ends_with(rng)
    return rng.choice(person.segment.mix)(rng)


def _profile(rng: random.Random, *, icp: bool) -> Profile:
    if icp:
        return (rng.choice(ICP_TITLES), *ICP_PLACE, "form", True)
    region, city = rng.choice(PLACES)
    consent = rng.random() < CONSENT_SHARE
    return (rng.choice(OTHER_TITLES), region, city, rng.choice(SOURCES), consent)


def _changed(rng: random.Random, profile: Profile) -> Profile:
    """One real change: a new job, a move, or consent given or withdrawn."""
    title, region, city, source, consent = profile
    draw = rng.random()
    if draw < 0.4:
        return (rng.choice([t for t in TITLES if t != title]), region, city, source, consent)
    if draw < 0.7:
        region, city = rng.choice([place for place in PLACES if place != (region, city)])
        return (title, region, city, source, consent)
    return (title, region, city, source, not consent)


def _attributes(profile: Profile) -> Data:
    """The full attribute set, so the update is right whether consumers merge or replace."""
    title, region, city, source, consent = profile
    return {
        "attributes": {
            "job_title": title,
            "region": region,
            "city": city,
            "source": source,
            "consent_email": consent,
        }
    }


def write_jsonl(events: Iterable[TrackingEvent], path: Path) -> int:
    """Write structured-mode CloudEvents one per line, gzipped for `.gz`; return the count.

    The gzip header carries no timestamp, so the same seed always gives the same bytes.
    """
    count = 0
    with _open_for_writing(path) as out:
        for event in events:
            out.write(orjson.dumps(event.to_cloudevent(), option=orjson.OPT_APPEND_NEWLINE))
            count += 1
    return count


def _open_for_writing(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "wb", compresslevel=6, mtime=0)
    return path.open("wb")
