"""Progress of a long loop: a tqdm bar on a terminal, plain lines otherwise.

Written to a log file, a tqdm bar becomes hundreds of carriage-return
updates; :func:`bar` therefore returns a tqdm bar only when the stream is a
terminal and otherwise a :class:`Lines` writer that prints one line every
``every`` seconds and one at the end.
"""

import sys
import time
from typing import Optional
from typing import TextIO


class Lines:
  """``desc: 120/400 steps (30%), 12 s`` every ``every`` seconds.

  Has the part of tqdm's interface the loops use (``update``, ``close``).
  """

  def __init__(self, total: int, desc: str, *, file: TextIO,
               every: float = 30.0):
    self.total, self.desc, self.n = int(total), desc, 0
    self._file, self._every = file, every
    self._start = self._last = time.monotonic()

  def _write(self, now: float) -> None:
    pct = 100 * self.n // max(self.total, 1)
    print(f"{self.desc}: {self.n}/{self.total} steps ({pct}%), "
          f"{now - self._start:.0f} s", file=self._file, flush=True)
    self._last = now

  def update(self, n: int = 1) -> None:
    self.n += n
    now = time.monotonic()
    if now - self._last >= self._every and self.n < self.total:
      self._write(now)

  def close(self) -> None:
    self._write(time.monotonic())


def bar(total: int, desc: str, *, file: Optional[TextIO] = None,
        every: float = 30.0):
  """A tqdm bar on a terminal, else :class:`Lines` (both to stderr)."""
  file = sys.stderr if file is None else file
  isatty = getattr(file, "isatty", None)
  if isatty is not None and isatty():
    from tqdm.auto import tqdm  # Only interactive runs show bars.
    return tqdm(total=total, desc=desc, leave=False, file=file)
  return Lines(total, desc, file=file, every=every)
