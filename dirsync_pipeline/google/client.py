"""The Directory API client: real google-api-python-client, paged, concurrent, retried.

Only three list calls matter for a sync: ``users.list`` and ``groups.list`` for the whole customer,
and ``members.list`` for each selected group and every group nested in one. Members of different
groups are fetched concurrently; httplib2 is not thread-safe, so each worker thread has its own Http.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin

import google_auth_httplib2
import httplib2
import polars as pl
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import RefreshError
from googleapiclient.discovery import build
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import HttpRequest

from dirsync_pipeline.google.batch import LeanBatchHttpRequest
from dirsync_pipeline.google.errors import (
    AuthorizationError,
    GroupNotFoundError,
    FetchStoppedError,
    IncompleteResponseError,
    MalformedResponseError,
    explain_http_error,
    explain_refresh_error,
)
from dirsync_pipeline.google.records import (
    GROUP_SCHEMA,
    MEMBER_SCHEMA,
    USER_SCHEMA,
    group_row,
    member_row,
    FrameBatches,
    pages_to_frame,
    user_row,
)
from dirsync_pipeline.google.retry import (
    ApiStats,
    RateLimiter,
    RetryPolicy,
    call_with_retry,
    retry_after,
    retry_cause,
)

NOTHING_PUBLISHED = "Nothing was published; the next sync retries (if it persists, check proxies between dirsync and Google)."
USERS_PAGE_SIZE = 500  # Google's maximum for users.list
GROUPS_PAGE_SIZE = 200  # maximum for groups.list and members.list
MEMBERS_PAGE_SIZE = 200
# Partial responses: `nextPageToken` must be in every mask, or Google drops it and paging stops silently.
# `kind` too: Google puts it on every page, so a page without it (`{}`, a proxy's empty object) is not
# Google's answer, while an empty page that is Google's still says what it is.
USER_FIELDS = (
    "kind,nextPageToken,users(id,primaryEmail,name(givenName,familyName,fullName),isAdmin,suspended,archived,"
    "orgUnitPath,creationTime,lastLoginTime,aliases)"
)
GROUP_FIELDS = "kind,nextPageToken,groups(id,email,name,description,directMembersCount,adminCreated)"
MEMBER_FIELDS = "kind,nextPageToken,members(id,email,role,type,status)"
HTTP_TIMEOUT_SECONDS = 60
GOOGLE_ROOT_URL = "https://admin.googleapis.com/"
# The client builds batch requests for Google's root URL whatever api_endpoint says: ours is built from it.
BATCH_PATH = "batch/admin/directory_v1"
# A batch never carries more than this share of a second's quota: Google meters parts as calls, and a
# batch that arrives a little early must not find the quota's bucket empty.
BATCH_SHARE_OF_QPS = 0.25
GROUP_COUNT_FIELD = list(GROUP_SCHEMA).index("direct_members_count")
PAGE_KINDS = {"users": "admin#directory#users", "groups": "admin#directory#groups", "members": "admin#directory#members"}
# users.get confirms at most this many users that a member list names and users.list did not return.
MAX_UNLISTED_CONFIRMED = 10


@dataclass(frozen=True)
class PageChain:
    """How far one list call has paged: what proves that its chain of page tokens ends.

    Google hands out a page token only while items remain, so a chain longer than the directory can hold
    (``max_pages``, from the config's limits), a token or a page returned twice, or a page with a token but
    no items cannot be Google's answer: it would page forever or lose rows, so the sync stops.
    """

    endpoint: str  # what the messages name, e.g. "users.list" or "members.list of group 0abc"
    max_pages: int
    pages: int = 0
    tokens: frozenset[str] = frozenset()
    first_ids: frozenset[str] = frozenset()  # each page's first id: a page served again repeats it

    def after(self, response: dict, items: list) -> PageChain:
        """The chain once this page is read; raises MalformedResponseError when the chain cannot be Google's."""
        token = response.get("nextPageToken")
        first_id = items[0].get("id") if items and isinstance(items[0], dict) else None
        if token and not items:
            raise MalformedResponseError(
                f"{self.endpoint}: page {self.pages + 1} carries a next page token but no items: a page that lost its "
                f"rows between dirsync and Google. {NOTHING_PUBLISHED}"
            )
        if token in self.tokens or first_id in self.first_ids:
            raise MalformedResponseError(
                f"{self.endpoint}: page {self.pages + 1} repeats an earlier {'page token' if token in self.tokens else 'page'}; "
                f"stopped paging to avoid an endless loop. {NOTHING_PUBLISHED}"
            )
        if token and self.pages + 1 >= self.max_pages:
            raise MalformedResponseError(
                f"{self.endpoint}: still handing out page tokens after {self.pages + 1} pages, more than the directory "
                f"can hold under the connection's `limits` (max_users, max_groups); stopped paging. If the directory "
                f"really is that large, raise the limits. {NOTHING_PUBLISHED}"
            )
        return PageChain(self.endpoint, self.max_pages, self.pages + 1,
                         self.tokens | {token} if token else self.tokens,
                         self.first_ids | {first_id} if first_id else self.first_ids)


@dataclass
class MembersFetch:
    """Direct member edges of every fetched group, and the groups that vanished mid-sync."""

    edges: pl.DataFrame
    fetched_group_ids: list[str]
    missing_group_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MembersPage:
    """One members.list page still to read: its group, how far its chain has paged, its request."""

    group_id: str
    chain: PageChain
    request: HttpRequest | None = None  # None: the group's first page, built by the worker that sends it


@dataclass(frozen=True)
class MembersPageRead:
    """What one page brought: its member rows and the group's next page, or the news that the group is gone."""

    group_id: str
    rows: list[tuple]
    next_page: MembersPage | None
    vanished: bool = False


class DirectoryClient:
    def __init__(
        self,
        credentials: Credentials,
        *,
        customer: str = "my_customer",
        api_endpoint: str | None = None,
        subject: str | None = None,
        max_concurrency: int = 8,
        batch_size: int = 1,
        retry_policy: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        max_users: int = 1_000_000,
        max_groups: int = 200_000,
    ):
        client_options = {"api_endpoint": api_endpoint} if api_endpoint else None
        self._service = build(
            "admin", "directory_v1", credentials=credentials, static_discovery=True,
            cache_discovery=False, client_options=client_options,
        )
        # Building a resource re-creates all its methods from discovery (~1 ms of CPU): once per client,
        # not once per request, or the CPU of 10,000 members.list calls dwarfs the API's own latency.
        self._users, self._groups, self._members = self._service.users(), self._service.groups(), self._service.members()
        self._credentials = credentials
        self._customer = customer
        self._subject = subject
        self._max_concurrency = max_concurrency
        self._retry_policy = retry_policy or RetryPolicy()
        self._rate_limiter = rate_limiter or RateLimiter(qps=None)
        self._batch_size = batch_size
        self._batch_uri = urljoin(api_endpoint or GOOGLE_ROOT_URL, BATCH_PATH)
        self._thread_http = threading.local()
        self._stopping = threading.Event()
        # Page chains are bounded by what the directory can hold: a group's members are users and groups.
        self._max_pages = {"users.list": _pages_for(max_users, USERS_PAGE_SIZE),
                           "groups.list": _pages_for(max_groups, GROUPS_PAGE_SIZE),
                           "members.list": _pages_for(max_users + max_groups, MEMBERS_PAGE_SIZE)}
        self.stats = ApiStats()

    def stop(self) -> None:
        """Make every request of this client still to be sent (and every retry wait) raise FetchStoppedError.

        Called when the run is interrupted (SIGTERM, SIGINT, Dagster's run termination) or one part of the fetch
        failed: the threads still paging end at their next request instead of paging on to the end.
        """
        self._stopping.set()

    # -- the three listings -------------------------------------------------------------------

    def fetch_users(self) -> pl.DataFrame:
        """Every non-deleted user of the customer (all domains)."""
        request = self._users.list(customer=self._customer, maxResults=USERS_PAGE_SIZE, orderBy="email", fields=USER_FIELDS)
        pages = self._pages(request, "users.list", "users", self._users.list_next)
        return pages_to_frame(_read_ahead(pages), user_row, USER_SCHEMA)

    def verify_users_listed(self, users: pl.DataFrame, edges: pl.DataFrame) -> int:
        """Prove users.list complete against the member lists: every USER member in the directory's own domains
        (those of the users listed) that users.list did not return is asked for with ``users.get``.

        One that exists means the listing lost users (a page dropped or emptied on the way) while saying
        success, so the sync fails rather than publish a directory without them. Returns how many such members
        users.get found deleted since (nothing to be incomplete about).
        """
        domains = users.select(pl.col("primary_email").str.split("@").list.last().unique())
        unlisted = (
            edges.filter((pl.col("member_type") == "USER") & ~pl.col("member_id").is_in(users["user_id"].implode()))
            .filter(pl.col("member_email").str.split("@").list.last().is_in(domains.to_series().implode()))
            .select("member_id", "member_email").unique("member_id").sort("member_email")
        )
        existing, deleted = [], 0
        for member_id, email in unlisted.iter_rows():
            try:
                self._execute(self._users.get(userKey=member_id, fields="id,primaryEmail"), "users.get")
            except GroupNotFoundError:  # any 404: the user was deleted after the member list was read
                deleted += 1
                continue
            existing.append(email)
            if len(existing) == MAX_UNLISTED_CONFIRMED:
                break
        if existing:
            raise IncompleteResponseError(
                f"users.list did not return {'at least ' if len(existing) == MAX_UNLISTED_CONFIRMED else ''}"
                f"{len(existing)} user(s) that groups list as members and users.get confirms exist "
                f"({', '.join(existing)}): the listing is incomplete (a page lost or emptied between dirsync and "
                f"Google). {NOTHING_PUBLISHED}"
            )
        return deleted

    def fetch_groups(self) -> pl.DataFrame:
        """Every group of the customer, so an admin can choose which to sync."""
        return pages_to_frame(self._group_pages(), group_row, GROUP_SCHEMA)

    def _group_pages(self) -> Iterator[list]:
        request = self._groups.list(customer=self._customer, maxResults=GROUPS_PAGE_SIZE, fields=GROUP_FIELDS)
        return self._pages(request, "groups.list", "groups", self._groups.list_next)

    def fetch_members(
        self, group_ids: Iterable[str], *, on_progress: Callable[[int, int], None] | None = None
    ) -> MembersFetch:
        """Direct members of ``group_ids`` and, recursively, of every group nested in them (see _fetch_members)."""
        return self._fetch_members(iter([list(group_ids)]), on_progress)

    def fetch_groups_and_members(
        self, select: Callable[[pl.DataFrame], list[str]], *, on_progress: Callable[[int, int], None] | None = None
    ) -> tuple[pl.DataFrame, MembersFetch]:
        """Every group (groups.list), and the members of the groups ``select`` picks from each page of them.

        Each page's selected groups go to members.list as soon as the page arrives: waiting for the last page
        first would leave the quota idle for as long as the groups.list chain takes (10 pages at 20,000 users).
        """
        pages: list[pl.DataFrame] = []

        def selected_per_page() -> Iterator[list[str]]:
            for items in self._group_pages():
                pages.append(pages_to_frame([items], group_row, GROUP_SCHEMA))
                yield select(pages[-1])

        batches = selected_per_page()
        if self._max_concurrency == 1:  # one request at a time: every groups.list page before the first member
            batches = iter(list(batches))
        fetched = self._fetch_members(batches, on_progress)
        return pl.concat(pages) if pages else pl.DataFrame(schema=GROUP_SCHEMA), fetched

    def _fetch_members(
        self, group_id_batches: Iterator[list[str]], on_progress: Callable[[int, int], None] | None
    ) -> MembersFetch:
        """Direct members of the groups ``group_id_batches`` yields and, recursively, of every group nested in them.

        The batches are drawn in a thread of their own (a listing that pages), each as soon as it is there.
        Pages are read concurrently, up to ``batch_size`` of them per HTTP batch request, as groups are
        discovered; a group's next page goes to the front of the queue so that groups finish early. Each
        group is fetched once, so cycles and diamonds cost nothing extra. A group deleted since
        ``groups.list`` (404) is skipped and reported rather than failing the sync. At most twice
        ``max_concurrency`` batches are in flight: enough to keep every worker busy, while ``wait``
        (linear in the futures it watches) stays cheap for 10,000 groups. ``on_progress`` hears of each
        group once every batch of groups is known.
        """
        edges = FrameBatches(MEMBER_SCHEMA)
        fetched: list[str] = []
        missing: list[str] = []
        partial: dict[str, list[tuple]] = {}  # rows of the groups whose last page has not arrived yet
        waiting: deque[MembersPage] = deque()
        seen: set[str] = set()

        def add_groups(group_ids: Iterable[str]) -> None:
            for group_id in group_ids:
                if group_id not in seen:
                    seen.add(group_id)
                    waiting.append(self._first_members_page(group_id))

        with ThreadPoolExecutor(1, thread_name_prefix="group-pages") as lister, \
                ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="members") as pool:
            next_batch: Future | None = lister.submit(next, group_id_batches, None)
            in_flight: set[Future] = set()
            try:
                while waiting or in_flight or next_batch:
                    while waiting and len(in_flight) < 2 * self._max_concurrency:
                        in_flight.add(pool.submit(self._read_members_pages, self._take_batch(waiting)))
                    done, _ = wait(in_flight | ({next_batch} if next_batch else set()), return_when=FIRST_COMPLETED)
                    if next_batch in done:
                        batch, next_batch = next_batch.result(), None
                        if batch is not None:
                            add_groups(batch)
                            next_batch = lister.submit(next, group_id_batches, None)
                    for future in done & in_flight:
                        in_flight.remove(future)
                        for read in future.result():
                            group_id = read.group_id
                            if read.vanished:
                                partial.pop(group_id, None)
                                missing.append(group_id)
                                continue
                            partial.setdefault(group_id, []).extend(read.rows)
                            if read.next_page is not None:
                                waiting.appendleft(read.next_page)
                                continue
                            group_edges = partial.pop(group_id)
                            fetched.append(group_id)
                            edges.extend(group_edges)
                            add_groups(e[1] for e in group_edges if e[3] == "GROUP")
                    if on_progress and not next_batch:
                        on_progress(len(fetched) + len(missing), len(seen))
            except BaseException:
                self.stop()  # the pages in flight end at their next request
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return MembersFetch(edges.frame(), sorted(fetched), sorted(missing))

    def verify_member_counts(self, fetched: MembersFetch, groups: pl.DataFrame) -> int:
        """Prove each fetched member list complete against Google's own ``directMembersCount``.

        A group whose membership changed while the sync ran is recounted with ``groups.get``; a count
        that still differs means Google answered incompletely while saying success, so the sync fails
        rather than publish a partial directory. Returns how many groups needed a recount.
        """
        received = fetched.edges.group_by("group_id").agg(pl.len().alias("received"),
                                                          pl.col("member_id").n_unique().alias("distinct"))
        compared = (
            groups.filter(pl.col("group_id").is_in(fetched.fetched_group_ids))
            .join(received, on="group_id", how="left")
            .with_columns(pl.col("received", "distinct").fill_null(0))
            .filter(pl.col("received") != pl.col("direct_members_count"))
        )
        fewer, more = [], []
        for group_id, email, received_count, distinct in compared.select(
                "group_id", "email", "received", "distinct").iter_rows():
            try:
                current = self._current_member_count(group_id)
            except GroupNotFoundError:
                continue  # deleted after its members were read: nothing left to be incomplete
            if received_count < current:
                fewer.append(f"{email}: {received_count} of {current}")
            elif received_count > current:
                twice = f"; {received_count - distinct} member(s) listed twice" if distinct < received_count else ""
                more.append(f"{email}: {received_count} rows for {current} members{twice}")
        problems = [f"fewer members than Google's own directMembersCount for {len(fewer)} group(s) ({'; '.join(fewer[:10])})"
                    ] if fewer else []
        if more:
            problems.append(f"more members than Google's own directMembersCount for {len(more)} group(s) "
                            f"({'; '.join(more[:10])})")
        if problems:
            raise IncompleteResponseError(
                f"members.list returned {' and '.join(problems)}. Google's answer does not add up; nothing was "
                "published. The next sync retries; if it persists, check proxies between dirsync and Google, then "
                "report it to Google Workspace support."
            )
        return compared.height

    def _current_member_count(self, group_id: str) -> int:
        request = self._groups.get(groupKey=group_id, fields="id,email,directMembersCount")
        return group_row(self._execute(request, "groups.get", group=group_id))[GROUP_COUNT_FIELD]

    def _first_members_page(self, group_id: str) -> MembersPage:
        return MembersPage(group_id, PageChain(f"members.list of group {group_id}", self._max_pages["members.list"]))

    def _take_batch(self, waiting: deque[MembersPage]) -> list[MembersPage]:
        """The next pages to send together: up to ``batch_size``, fewer when that leaves workers idle or would
        carry more than a quarter second of the limiter's current pace (it slows down when Google refuses)."""
        qps = self._rate_limiter.qps
        paced = max(1, int(qps * BATCH_SHARE_OF_QPS)) if qps else self._batch_size
        size = min(self._batch_size, paced, math.ceil(len(waiting) / self._max_concurrency))
        return [waiting.popleft() for _ in range(size)]

    def _read_members_pages(self, pages: list[MembersPage]) -> list[MembersPageRead]:
        """Fetch and parse the pages in this worker thread: the loop that schedules them stays free."""
        requests = [page.request or self._members.list(groupKey=page.group_id, maxResults=MEMBERS_PAGE_SIZE,
                                                       fields=MEMBER_FIELDS) for page in pages]
        answers = self._send_members_requests(pages, requests)
        return [self._members_page_read(page, request, answer) for page, request, answer in zip(pages, requests, answers)]

    def _members_page_read(self, page: MembersPage, request: HttpRequest, answer: object) -> MembersPageRead:
        if isinstance(answer, GroupNotFoundError):
            return MembersPageRead(page.group_id, [], None, vanished=True)
        items = self._page_items(answer, page.chain.endpoint, "members")
        chain = page.chain.after(answer, items)
        rows = [member_row(page.group_id, member) for member in items]
        next_request = self._members.list_next(request, answer)
        next_page = None if next_request is None else MembersPage(page.group_id, chain, next_request)
        return MembersPageRead(page.group_id, rows, next_page)

    def _send_members_requests(self, pages: list[MembersPage], requests: list[HttpRequest]) -> list[object]:
        """Each page's answer in order: the JSON response, or the GroupNotFoundError of a vanished group.

        One page goes as a plain request; several go as one batch request whose parts are retried alone:
        a part that failed transiently is sent again, in a smaller batch, without the parts that succeeded.
        """
        if len(pages) == 1:
            try:
                return [self._execute(requests[0], "members.list", group=pages[0].group_id)]
            except GroupNotFoundError as vanished:
                return [vanished]
        answers: dict[int, object] = {}
        unanswered = list(range(len(pages)))

        def send_unanswered() -> None:
            nonlocal unanswered
            failures: dict[int, HttpError] = {}

            def collect(request_id: str, response: object, error: HttpError | None) -> None:
                if error is None:
                    answers[int(request_id)] = response
                else:
                    failures[int(request_id)] = error

            batch = LeanBatchHttpRequest(batch_uri=self._batch_uri)
            for index in unanswered:
                batch.add(requests[index], callback=collect, request_id=str(index))
            self._raise_if_stopping()
            self.stats.count_batch()
            batch.execute(http=self._http())
            unanswered = sorted(index for index, error in failures.items() if retry_cause(error))
            for index in failures.keys() - set(unanswered):
                error = explain_http_error(failures[index], request=f"members.list of group {pages[index].group_id}",
                                           subject=self._subject)
                if not isinstance(error, GroupNotFoundError):
                    raise error
                answers[index] = error
            if unanswered:  # the retry policy waits (the longest Retry-After of a part), then sends these again
                raise max((failures[index] for index in unanswered), key=lambda error: retry_after(error) or 0.0)

        with self._explained_errors(f"members.list of {len(pages)} groups in one batch"):
            call_with_retry(send_unanswered, endpoint="members.list", policy=self._retry_policy,
                            limiter=self._rate_limiter, stats=self.stats, calls=lambda: len(unanswered),
                            sleep=self._wait_unless_stopped)
        return [answers[index] for index in range(len(pages))]

    # -- paging, execution, errors -------------------------------------------------------------

    def _pages(self, request, endpoint: str, items_key: str, list_next) -> Iterator[list]:
        """Yield each page's items, until the page without a token; the chain is proven to end (PageChain)."""
        chain = PageChain(endpoint, self._max_pages[endpoint])
        while request is not None:
            response = self._execute(request, endpoint, ahead=True)
            items = self._page_items(response, endpoint, items_key)
            chain = chain.after(response, items)
            yield items
            request = list_next(request, response)

    @staticmethod
    def _page_items(response: object, endpoint: str, items_key: str) -> list:
        if not isinstance(response, dict):
            raise MalformedResponseError(
                f"{endpoint}: the answer is not a JSON object (got {type(response).__name__}: an HTML page from a "
                "proxy, or truncated JSON?); check proxies between dirsync and Google"
            )
        if response.get("kind") != PAGE_KINDS[items_key]:
            raise MalformedResponseError(
                f"{endpoint}: a page without Google's `kind` {PAGE_KINDS[items_key]!r} (got {sorted(response)[:5]} as its "
                f"keys): not the Directory API's answer (emptied or rewritten on the way). {NOTHING_PUBLISHED}"
            )
        items = response.get(items_key, [])  # Google omits the key on an empty page
        if not isinstance(items, list):
            raise MalformedResponseError(f"{endpoint}: `{items_key}` is {type(items).__name__}, not a list")
        return items

    def _execute(self, request, endpoint: str, *, group: str | None = None, ahead: bool = False) -> object:
        what = f"{endpoint} of group {group}" if group else f"{endpoint} (customer {self._customer})"

        def send() -> object:
            self._raise_if_stopping()
            return request.execute(http=self._http())

        with self._explained_errors(what):
            return call_with_retry(send, endpoint=endpoint, policy=self._retry_policy, limiter=self._rate_limiter,
                                   stats=self.stats, sleep=self._wait_unless_stopped, ahead=ahead)

    def _raise_if_stopping(self) -> None:
        if self._stopping.is_set():
            raise FetchStoppedError("the fetch was stopped (the run was interrupted, or another part of it failed)")

    def _wait_unless_stopped(self, seconds: float) -> None:
        """The retry policy's wait, cut short (and raising) when the client is stopped meanwhile."""
        if self._stopping.wait(seconds):
            self._raise_if_stopping()

    @contextmanager
    def _explained_errors(self, what: str) -> Iterator[None]:
        """The client library's exceptions, turned into errors that say what is wrong and how to fix it."""
        try:
            yield
        except RefreshError as exc:
            raise explain_refresh_error(exc, subject=self._subject) from None
        except BatchError:  # a batch answer that is not multipart/mixed
            raise MalformedResponseError(f"{what}: the batch answer is not multipart/mixed; check proxies between "
                                         "dirsync and Google") from None
        except HttpError as exc:
            raise explain_http_error(exc, request=what, subject=self._subject) from None
        except json.JSONDecodeError:  # the client's JSON model could not decode a 200 answer
            raise MalformedResponseError(f"{what}: the answer is not a JSON object (truncated JSON or an HTML page)") from None
        except ValueError:
            if isinstance(self._credentials, AnonymousCredentials):  # 401, and anonymous credentials cannot refresh
                raise AuthorizationError(
                    f"{what}: the server answered 401 and credentials.type is none; configure credentials "
                    "(service_account, authorized_user or adc) for this endpoint"
                ) from None
            raise

    def _http(self) -> google_auth_httplib2.AuthorizedHttp:
        """One authorized Http per thread: httplib2 connections must not be shared across threads."""
        http = getattr(self._thread_http, "http", None)
        if http is None:
            http = google_auth_httplib2.AuthorizedHttp(self._credentials, http=httplib2.Http(timeout=HTTP_TIMEOUT_SECONDS))
            self._thread_http.http = http
        return http


def _pages_for(items: int, page_size: int) -> int:
    """The most pages a listing of at most ``items`` can take: full pages, and an empty last one."""
    return math.ceil(items / page_size) + 1


def _read_ahead(pages: Iterator[list]) -> Iterator[list]:
    """Each page while the next one is being fetched, in another thread.

    Each users.list request needs the previous page's token, so the pages form a chain: parsing a page
    of 500 users (milliseconds of CPU) before asking for the next would lengthen every link of it.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as fetcher:
        upcoming = fetcher.submit(next, pages, None)
        while (page := upcoming.result()) is not None:
            upcoming = fetcher.submit(next, pages, None)
            yield page
