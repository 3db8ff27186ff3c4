"""squall: the Python client of squall's replicated key-value store.

A pure-Python package over the C client library (libsquall-client.so) with ctypes: no build
step, the standard library only. A Client connects to any member of a group (a list of the
members' client ports) and moves to the next one when that member fails, retrying with the same
request numbers so that every put is applied once.

    import squall
    with squall.Client("127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102") as c:
        v = c.put("/orders/42", b'{"qty": 3}').version
        c.put("/orders/42", b'{"qty": 4}', if_version=v)   # raises squall.Conflict if it moved on
        e = c.get("/orders/42")                             # e.value, e.version, e.time
        for ev in c.watch("/orders/", from_version=1):      # every update, in order per shard
            ...

One Client may be used from several threads at once (its calls release the GIL while they
wait). The library is found through SQUALL_CLIENT_LIB (a path to the .so), else beside an
installed package (PREFIX/lib), else in a source tree's build/, else by the system's loader.
"""
import ctypes
import ctypes.util
import datetime as _dt
import os
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Union

__all__ = [
    "Client", "Watch", "Entry", "Written", "Item", "Pool", "Event",
    "SquallError", "Conflict", "NotFound", "NoPool", "Exists", "InvalidArgument", "TooLarge",
    "Unavailable", "Timeout", "Closed",
]

# ---- the library ----


def _find_library() -> str:
    env = os.environ.get("SQUALL_CLIENT_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    names = ("libsquall-client.so.0", "libsquall-client.so")
    # installed: PREFIX/lib/python3/dist-packages/squall -> PREFIX/lib; from the source tree:
    # python/squall -> build/
    for d in (os.path.join(here, "..", "..", ".."), os.path.join(here, "..", "..", "build")):
        for n in names:
            p = os.path.normpath(os.path.join(d, n))
            if os.path.exists(p):
                return p
    found = ctypes.util.find_library("squall-client")
    if found:
        return found
    raise ImportError("libsquall-client.so not found: set SQUALL_CLIENT_LIB to its path, or "
                      "install squall (make install PREFIX=...)")


_lib = ctypes.CDLL(_find_library())

_WATCH_SHARDS = 16  # SQ_CLIENT_WATCH_SHARDS


class _Trace(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "call", "sent", "received", "multicast", "delivered", "durable", "persisted",
        "answered", "answer_in", "returned")]


class _Result(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("version", ctypes.c_uint64),
                ("timestamp", ctypes.c_uint64), ("deleted", ctypes.c_int),
                ("count", ctypes.c_uint32), ("value", ctypes.c_void_p),
                ("size", ctypes.c_size_t), ("message", ctypes.c_char * 256),
                ("trace", _Trace), ("cap_", ctypes.c_size_t)]


class _PutOpts(ctypes.Structure):
    _fields_ = [("if_version", ctypes.c_int), ("version", ctypes.c_uint64),
                ("if_absent", ctypes.c_int), ("trace", ctypes.c_int)]


class _GetOpts(ctypes.Structure):
    _fields_ = [("at_version", ctypes.c_int), ("version", ctypes.c_uint64),
                ("at_time", ctypes.c_int), ("time_us", ctypes.c_uint64),
                ("stable", ctypes.c_int), ("size_only", ctypes.c_int), ("trace", ctypes.c_int)]


class _Item(ctypes.Structure):
    _fields_ = [("key", ctypes.c_void_p), ("key_len", ctypes.c_size_t),
                ("version", ctypes.c_uint64), ("timestamp", ctypes.c_uint64),
                ("size", ctypes.c_uint32), ("deleted", ctypes.c_int)]


class _Event(ctypes.Structure):
    _fields_ = [("key", ctypes.c_void_p), ("key_len", ctypes.c_size_t),
                ("version", ctypes.c_uint64), ("timestamp", ctypes.c_uint64),
                ("deleted", ctypes.c_int), ("value", ctypes.c_void_p),
                ("size", ctypes.c_size_t), ("shard", ctypes.c_uint32)]


_WATCH_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(_Event))
_P = ctypes.c_void_p
_R = ctypes.POINTER(_Result)


def _proto(name, restype, *args):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(args)
    return f


class _Tls(ctypes.Structure):
    _fields_ = [("ca_file", ctypes.c_char_p), ("cert_file", ctypes.c_char_p),
                ("key_file", ctypes.c_char_p)]


_open = _proto("sq_client_open", ctypes.c_int, ctypes.POINTER(_P), ctypes.c_char_p, ctypes.c_int,
               ctypes.c_char_p, ctypes.c_size_t)
_open_tls = _proto("sq_client_open_tls", ctypes.c_int, ctypes.POINTER(_P), ctypes.c_char_p,
                   ctypes.c_int, ctypes.POINTER(_Tls), ctypes.c_char_p, ctypes.c_size_t)
_close = _proto("sq_client_close", None, _P)
_member = _proto("sq_client_member", ctypes.c_uint32, _P)
_free = _proto("sq_kv_result_free", None, _R)
_put = _proto("sq_client_put", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
              ctypes.POINTER(_PutOpts), _R)
_get = _proto("sq_client_get", ctypes.c_int, _P, ctypes.c_char_p, ctypes.POINTER(_GetOpts), _R)
_remove = _proto("sq_client_remove", ctypes.c_int, _P, ctypes.c_char_p,
                 ctypes.POINTER(_PutOpts), _R)
_next_item = _proto("sq_kv_next_item", ctypes.c_int, _R, ctypes.POINTER(ctypes.c_size_t),
                    ctypes.POINTER(_Item))
_list = _proto("sq_client_list", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64,
               _R)
_history = _proto("sq_client_history", ctypes.c_int, _P, ctypes.c_char_p, _R)
_pool_create = _proto("sq_client_pool_create", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_char_p,
                      ctypes.c_uint32, _R)
_pool_list = _proto("sq_client_pool_list", ctypes.c_int, _P, _R)
_status = _proto("sq_client_status", ctypes.c_int, _P, ctypes.c_int, _R)
_watch_shards = _proto("sq_client_watch_shards", ctypes.c_int, _P, ctypes.c_char_p,
                       ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t, _WATCH_FN, _P,
                       ctypes.POINTER(ctypes.c_uint64))
_unwatch = _proto("sq_client_unwatch", ctypes.c_int, _P, ctypes.c_uint64)
_strerror = _proto("sq_strerror", ctypes.c_char_p, ctypes.c_int)
_err_name = _proto("sq_err_name", ctypes.c_char_p, ctypes.c_int)
_transient = _proto("sq_err_transient", ctypes.c_int, ctypes.c_int)

# ---- errors ----

# the SQ_E* codes (include/squall/errors.h) the exceptions below are chosen by
EINVAL, EMSGSIZE, ECLOSED, ETIMEDOUT = -1, -4, -8, -11
ENOTFOUND, ECONFLICT, ENOPOOL, EEXIST = -19, -21, -23, -24


class SquallError(Exception):
    """An error from the group or the library: `code` (a negative SQ_E* number), `name`
    ("SQ_ECONFLICT"), and the member's one-line reason as the message."""

    def __init__(self, code: int, message: str = ""):
        self.code = code
        self.name = (_err_name(code) or b"SQ_E?").decode()
        self.reason = message or (_strerror(code) or b"").decode()
        super().__init__("%s: %s" % (self.name, self.reason))


class Conflict(SquallError):
    """A conditional put or remove found the key at another version: `current_version` (0 when
    the key never existed)."""

    def __init__(self, code: int, message: str, current_version: int):
        super().__init__(code, message)
        self.current_version = current_version


class NotFound(SquallError, KeyError):
    """No such key (or version, or pool entry). A get at a version or time that finds the key
    removed then has `deleted` True and the removal's `version`."""

    def __init__(self, code: int, message: str = "", deleted: bool = False, version: int = 0):
        super().__init__(code, message)
        self.deleted = deleted
        self.version = version

    __str__ = SquallError.__str__


class NoPool(SquallError):
    """No pool holds the key: create one with Client.create_pool."""


class Exists(SquallError):
    """The pool exists already."""


class InvalidArgument(SquallError, ValueError):
    """A bad key, pool path or option."""


class TooLarge(SquallError, ValueError):
    """The value is larger than its pool allows."""


class Unavailable(SquallError):
    """Not now: no quorum, a view change, a member failed. The same call may succeed later."""


class Timeout(Unavailable, TimeoutError):
    """No member answered within the client's timeout (the outcome of a write is unknown)."""


class Closed(SquallError):
    """The client is closed, or no member in its list speaks squall's client protocol."""


def _error(r: _Result) -> SquallError:
    code = r.status
    msg = r.message.decode("utf-8", "replace")
    if code == ECONFLICT:
        return Conflict(code, msg, r.version)
    if code == ENOTFOUND:
        return NotFound(code, msg, bool(r.deleted), r.version)
    cls = {ENOTFOUND: NotFound, ENOPOOL: NoPool, EEXIST: Exists, EINVAL: InvalidArgument,
           EMSGSIZE: TooLarge, ETIMEDOUT: Timeout, ECLOSED: Closed}.get(code)
    if cls is None:
        cls = Unavailable if _transient(code) else SquallError
    return cls(code, msg)


# ---- results ----


def _time(us: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(us / 1e6, tz=_dt.timezone.utc)


def _micros(t: Union[_dt.datetime, int, float]) -> int:
    """A time as microseconds since the epoch: an int is taken as microseconds, a datetime as
    itself (a naive one is local time, as datetime.timestamp() reads it)."""
    if isinstance(t, _dt.datetime):
        return int(round(t.timestamp() * 1e6))
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0:
        return int(t)
    raise TypeError("a time is a datetime or microseconds since the epoch, not %r" % (t,))


@dataclass(frozen=True)
class Written:
    """What a put or remove made: the new version and its hybrid logical clock time."""
    version: int
    timestamp_us: int

    @property
    def time(self) -> _dt.datetime:
        return _time(self.timestamp_us)


@dataclass(frozen=True)
class Entry:
    """A value read by get: its bytes, version and time; `deleted` when a read at a version or
    a time found the key removed then (value is b"")."""
    key: str
    value: bytes
    version: int
    timestamp_us: int
    deleted: bool = False

    @property
    def time(self) -> _dt.datetime:
        return _time(self.timestamp_us)


@dataclass(frozen=True)
class Item:
    """One key of a list, or one version of a history."""
    key: str
    version: int
    timestamp_us: int
    size: int
    deleted: bool = False

    @property
    def time(self) -> _dt.datetime:
        return _time(self.timestamp_us)


@dataclass(frozen=True)
class Pool:
    path: str
    store: str  # "volatile", "persistent" or "trigger"
    subgroup: int
    shards: int


@dataclass(frozen=True)
class Event:
    """One update seen by a watch: versions count per shard of the pool."""
    key: str
    value: bytes
    version: int
    timestamp_us: int
    deleted: bool
    shard: int

    @property
    def time(self) -> _dt.datetime:
        return _time(self.timestamp_us)


_STORES = {0: "volatile", 1: "persistent", 2: "trigger"}


def _key(k: str) -> bytes:
    if not isinstance(k, str):
        raise TypeError("keys and paths are str, not %s" % type(k).__name__)
    b = k.encode()
    if b"\0" in b:
        raise InvalidArgument(EINVAL, "a key may not hold a NUL byte")
    return b


def _value(v) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError("a value is bytes (or str, as UTF-8), not %s" % type(v).__name__)


# ---- the client ----


class Client:
    """A connection to a group: `members` is "host:port,host:port,..." (or a list of them), the
    members' client ports; `timeout` bounds each call in seconds, retries included.

    Over TLS (members with [tls]) when `tls` is True or any of `cacert` (PEM file of the CA that
    signed the members' certificates; default: the system's trust store), `cert` and `key` (this
    client's certificate and key, for members that require one) is given."""

    def __init__(self, members: Union[str, Sequence[str]], timeout: float = 10.0,
                 tls: bool = False, cacert: Optional[str] = None, cert: Optional[str] = None,
                 key: Optional[str] = None):
        if not isinstance(members, str):
            members = ",".join(members)
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if (cert is None) != (key is None):
            raise ValueError("cert and key go together (a certificate and its key)")
        err = ctypes.create_string_buffer(1024)
        h = _P()
        if tls or cacert is not None or cert is not None:
            files = _Tls(*(None if f is None else os.fsencode(f) for f in (cacert, cert, key)))
            rc = _open_tls(ctypes.byref(h), members.encode(), int(timeout * 1000),
                           ctypes.byref(files), err, len(err))
        else:
            rc = _open(ctypes.byref(h), members.encode(), int(timeout * 1000), err, len(err))
        if rc != 0:
            raise _error(_Result(status=rc, message=err.value[:255]))
        self._h = h
        self._lock = threading.Lock()  # close against the calls in flight
        self._calls = 0
        self._idle = threading.Condition(self._lock)
        self._watches = set()

    # the handle, counted in and out so that close() waits for calls in flight
    def _enter(self) -> _P:
        with self._lock:
            if self._h is None:
                raise Closed(ECLOSED, "the client is closed")
            self._calls += 1
            return self._h

    def _leave(self) -> None:
        with self._lock:
            self._calls -= 1
            if self._calls == 0:
                self._idle.notify_all()

    def _call(self, fn, *args) -> _Result:
        h = self._enter()
        r = _Result()
        try:
            fn(h, *args, ctypes.byref(r))
            if r.status != 0:
                raise _error(r)
            return r
        except BaseException:
            _free(ctypes.byref(r))
            raise
        finally:
            self._leave()

    def close(self) -> None:
        """Ends the watches, waits for calls in flight, closes the connection. Idempotent."""
        for w in list(self._watches):
            w.close()
        with self._lock:
            while self._calls > 0:
                self._idle.wait()
            h, self._h = self._h, None
        if h is not None:
            _close(h)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def member(self) -> Optional[int]:
        """The id of the member this client is connected to now, or None."""
        h = self._enter()
        try:
            m = _member(h)
        finally:
            self._leave()
        return None if m == 0xFFFFFFFF else m

    def put(self, key: str, value, *, if_version: Optional[int] = None,
            if_absent: bool = False) -> Written:
        """Puts `value` (bytes, or str as UTF-8) under `key` ("/orders/42"). With if_version=V
        only if the key is still at version V (0: must not exist), with if_absent only if it
        does not exist: else Conflict, with the key's current version."""
        v = _value(value)
        o = _PutOpts(if_version=if_version is not None, version=if_version or 0,
                     if_absent=bool(if_absent))
        r = self._call(_put, _key(key), v, len(v), ctypes.byref(o))
        try:
            return Written(r.version, r.timestamp)
        finally:
            _free(ctypes.byref(r))

    def get(self, key: str, *, version: Optional[int] = None,
            at: Union[_dt.datetime, int, None] = None, stable: bool = False) -> Entry:
        """The key's latest value, or the latest at or before `version`, or as of time `at` (a
        datetime, or microseconds since the epoch); stable=True reads only what every replica
        holds (it sees every put completed before it). NotFound when there is none."""
        o = _GetOpts(stable=bool(stable))
        if version is not None:
            o.at_version, o.version = 1, version
        if at is not None:
            o.at_time, o.time_us = 1, _micros(at)
        r = self._call(_get, _key(key), ctypes.byref(o))
        try:
            data = ctypes.string_at(r.value, r.size) if r.size else b""
            return Entry(key, data, r.version, r.timestamp, bool(r.deleted))
        finally:
            _free(ctypes.byref(r))

    def delete(self, key: str, *, if_version: Optional[int] = None) -> Written:
        """Removes `key` (a tombstone with its own version); NotFound if it does not exist,
        Conflict if if_version is given and the key is at another version."""
        o = _PutOpts(if_version=if_version is not None, version=if_version or 0)
        r = self._call(_remove, _key(key), ctypes.byref(o))
        try:
            return Written(r.version, r.timestamp)
        finally:
            _free(ctypes.byref(r))

    def _items(self, r: _Result) -> List[Item]:
        out, pos, it = [], ctypes.c_size_t(0), _Item()
        try:
            while True:
                rc = _next_item(ctypes.byref(r), ctypes.byref(pos), ctypes.byref(it))
                if rc < 0:
                    raise SquallError(rc, "a damaged list in the answer")
                if rc == 0:
                    return out
                k = ctypes.string_at(it.key, it.key_len).decode("utf-8", "surrogateescape")
                out.append(Item(k, it.version, it.timestamp, it.size, bool(it.deleted)))
        finally:
            _free(ctypes.byref(r))

    def list(self, prefix: str, *, at: Union[_dt.datetime, int, None] = None) -> List[Item]:
        """The keys under `prefix` ("/orders/") with their latest version (as of `at`), sorted;
        removed keys are left out."""
        t = 0 if at is None else _micros(at)
        return self._items(self._call(_list, _key(prefix), int(at is not None), t))

    def history(self, key: str) -> List[Item]:
        """Every version of `key`, oldest first (removals have deleted=True)."""
        return self._items(self._call(_history, _key(key)))

    def pools(self) -> List[Pool]:
        return [Pool(i.key, _STORES.get(i.timestamp_us, str(i.timestamp_us)), i.version, i.size)
                for i in self._items(self._call(_pool_list))]

    def create_pool(self, path: str, store: str = "persistent", shards: int = 0) -> None:
        """Creates the pool `path` ("/orders") on a subgroup of that store type ("volatile",
        "persistent", "trigger") or of that name; shards=0: all of it. Exists if it exists."""
        if shards < 0:
            raise ValueError("shards must be >= 0")
        _free(ctypes.byref(self._call(_pool_create, _key(path), _key(store), shards)))

    def status(self, json: bool = True):
        """This member's view of the group: a dict (json=True) or `squall status`'s text."""
        r = self._call(_status, 1 if json else 0)
        try:
            text = ctypes.string_at(r.value, r.size).decode()
        finally:
            _free(ctypes.byref(r))
        if json:
            import json as _json
            return _json.loads(text)
        return text

    def watch(self, target: str, from_version: int = 0, *,
              callback: Optional[Callable[[Event], None]] = None,
              from_shards: Optional[Sequence[int]] = None) -> "Watch":
        """Every update of `target` (a key, or a prefix ending in '/'), in version order per
        shard, from `from_version` on (0: from the start the store keeps), or per shard from
        `from_shards` (a Watch's positions, to resume it without missing anything). Iterate
        the Watch, or pass `callback` (it runs on the client's I/O thread: keep it short)."""
        return Watch(self, target, from_version, callback, from_shards)


class Watch:
    """A running watch: iterate it for Events (next(w, timeout) style: w.get(timeout)), or it
    calls its callback. `positions` is, per shard, the version after the last event delivered:
    Client.watch(target, from_shards=w.positions) resumes after a close."""

    def __init__(self, client: Client, target: str, from_version: int,
                 callback: Optional[Callable[[Event], None]], from_shards):
        self._client = client
        self._callback = callback
        self._q: "queue.Queue[Event]" = queue.Queue()
        self._closed = False
        self._mu = threading.Lock()
        if from_shards is not None:
            starts = [int(v) for v in from_shards]
            if len(starts) > _WATCH_SHARDS:
                raise ValueError("at most %d shards" % _WATCH_SHARDS)
        else:
            starts = [int(from_version)] * _WATCH_SHARDS
        self._next = starts + [0] * (_WATCH_SHARDS - len(starts))
        arr = (ctypes.c_uint64 * _WATCH_SHARDS)(*self._next)
        self._fn = _WATCH_FN(self._on_event)  # kept alive as long as the watch
        wid = ctypes.c_uint64(0)
        h = client._enter()
        try:
            rc = _watch_shards(h, _key(target), arr, _WATCH_SHARDS, self._fn, None,
                               ctypes.byref(wid))
        finally:
            client._leave()
        if rc != 0:
            raise _error(_Result(status=rc, message=b""))
        self._id = wid.value
        client._watches.add(self)

    def _on_event(self, _arg, evp) -> None:
        try:
            e = evp.contents
            k = ctypes.string_at(e.key, e.key_len).decode("utf-8", "surrogateescape")
            v = ctypes.string_at(e.value, e.size) if e.size else b""
            ev = Event(k, v, e.version, e.timestamp, bool(e.deleted), e.shard)
            with self._mu:
                if e.shard < _WATCH_SHARDS:
                    self._next[e.shard] = e.version + 1
            if self._callback is not None:
                self._callback(ev)
            else:
                self._q.put(ev)
        except BaseException:  # never into C: the event is dropped from the callback only
            import traceback
            traceback.print_exc()

    @property
    def positions(self) -> List[int]:
        with self._mu:
            return list(self._next)

    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None after `timeout` seconds (or once closed and drained)."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[Event]:
        while True:
            ev = self._q.get() if not self._closed else self.get(0)
            if ev is None:
                return
            yield ev

    def close(self) -> None:
        """Stops the watch; events already queued can still be read."""
        with self._mu:
            if self._closed:
                return
            self._closed = True
        c = self._client
        try:
            h = c._enter()
        except Closed:
            return
        try:
            _unwatch(h, self._id)
        finally:
            c._leave()
            c._watches.discard(self)
        self._q.put(None)  # ends an iteration that waits

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
