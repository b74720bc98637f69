"""A name -> constructor registry; the one way components are reached by name."""

from typing import Callable, Dict, Generic, TypeVar

from dlbook.errors import DlbookError

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to constructors; unknown names raise a `DlbookError` listing valid ones."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Callable[..., T]] = {}

  def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def decorator(fn: Callable[..., T]) -> Callable[..., T]:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = fn
      return fn
    return decorator

  def get(self, name: str) -> Callable[..., T]:
    if name not in self._entries:
      raise DlbookError(
          f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}")
    return self._entries[name]

  def names(self):
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries
