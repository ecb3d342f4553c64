"""Type stubs of the native module ``mitosis._native`` (re-exported by ``mitosis``)."""

import os
from typing import Any, Dict, List, NoReturn, Optional, Tuple, Union

_Socket = Optional[Union[str, "os.PathLike[str]"]]

__version__: str

class Parent:
    """The process that prepared itself: the seed is ready."""

    @property
    def is_child(self) -> bool: ...  # always False
    @property
    def is_parent(self) -> bool: ...  # always True
    @property
    def seed_id(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def prepare_us(self) -> int: ...  # the daemon's prepare time
    @property
    def prepare_ms(self) -> float: ...
    @property
    def mapped_bytes(self) -> int: ...
    @property
    def rss_bytes(self) -> int: ...
    @property
    def vmas(self) -> int: ...
    @property
    def source_pid(self) -> int: ...
    @property
    def snapshot_pid(self) -> int: ...
    @property
    def pinned(self) -> bool: ...
    @property
    def closed_fds(self) -> List[Tuple[int, str]]: ...  # descriptors children do not get

class Child:
    """A child resumed from the seed, continuing from the prepare point."""

    @property
    def is_child(self) -> bool: ...  # always True
    @property
    def is_parent(self) -> bool: ...  # always False
    @property
    def seed_id(self) -> str: ...
    @property
    def seed_host(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def pid(self) -> int: ...  # this child's own pid

class Resumed:
    """A child started by :func:`resume`; garbage-collecting it before it ended kills it."""

    @property
    def pid(self) -> int: ...  # as this host sees it (2 inside its container)
    @property
    def container(self) -> Optional[str]: ...  # its lean container's name, or None
    @property
    def timings(self) -> Dict[str, int]: ...  # fetch_image_us, spawn_us, restore_us, total_us, image_bytes
    def wait(self) -> Dict[str, Any]:
        """Waits for the end (GIL released). Keys: ``status`` (what ``mitosis resume``
        exits with), ``exit_code``, ``signal``, ``killed_by_mitosis`` (a reason or None),
        ``out_of_memory``, ``memory_limit_bytes``, ``description``,
        ``pager`` (faults, zero_faults, remote_faults, pages_fetched, bytes_fetched, fetches, pages_pushed, cache_hits)."""
        ...

def fork_prepare(id: str, pin: bool = False, socket: _Socket = None, copy: bool = False) -> Union[Parent, Child]: ...
def fork_resume(host: str, id: str, socket: _Socket = None) -> NoReturn: ...
def resume(
    host: str,
    id: str,
    socket: _Socket = None,
    *,
    container: bool = True,
    memory: Optional[int] = None,
    cpus: Optional[float] = None,
    pids: Optional[int] = None,
    hostname: Optional[str] = None,
    isolate_network: bool = False,
    eager: bool = False,
) -> Resumed: ...
def drop(id: str, socket: _Socket = None) -> None: ...
def seeds(socket: _Socket = None) -> List[Dict[str, Any]]: ...
def default_socket() -> str: ...
