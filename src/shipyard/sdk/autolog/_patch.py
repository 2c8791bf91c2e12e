"""Safe patching: replace a library function with a logging wrapper, and put the original back.

The promises kept here, for every flavor:

- The user's call runs exactly once, with the user's arguments unless a hook added its own
  (a callback), and its result or exception reaches the user untouched.
- A failure of autologging itself (the server is down, a value the store refuses) is an
  ``AutologWarning``, never an exception in the user's code.
- Only the outermost autologged call logs. The fluent run stack is per process, so the guard is
  too: while an autologged call runs, autologged calls made anywhere in the process (a
  meta-estimator's inner fits, in this thread or in joblib's worker threads) just run.
- ``unpatch_all`` puts back the very objects that were there (``cls.fit is original``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipyard.sdk import fluent
from shipyard.tracking.schemas import RunStatus

log = logging.getLogger("shipyard.autolog")


class AutologWarning(UserWarning):
    """Autologging could not record something; the user's code ran as if it were off."""


@dataclass(frozen=True)
class Config:
    log_models: bool = True
    log_input_examples: bool = True
    log_training_metrics: bool = True
    max_tuning_runs: int | None = None
    silent: bool = False


@dataclass
class _Patch:
    owner: Any
    name: str
    original: Any
    had_own: bool  # the name was in owner.__dict__ (else it was inherited)


_lock = threading.RLock()
_patches: list[_Patch] = []
_config: Config | None = None
_generation = 0  # bumped by every (un)patch: a wrapper from an older one just calls through
_busy = 0  # autologged calls in progress in this process


def current_config() -> Config | None:
    return _config


def warn(message: str, exc: BaseException | None = None) -> None:
    """Report an autologging failure without ever raising (even under ``-W error``)."""
    log.debug("autolog: %s", message, exc_info=exc)
    cfg = _config
    if cfg is not None and cfg.silent:
        return
    text = f"shipyard autolog: {message}" + (f": {type(exc).__name__}: {exc}" if exc else "")
    try:
        warnings.warn(text, AutologWarning, stacklevel=3)
    except Exception:  # warnings turned into errors: never let that reach the user's code
        log.warning("%s", text)


class Hook:
    """What one autologged call records. ``before`` runs before the user's call and may change
    its arguments through ``self.bound`` (to add a callback, never to alter the user's own
    objects); ``after`` runs once it returned. Both may raise: the wrapper turns that into a
    warning."""

    flavor = ""

    def __init__(self, run: fluent.ActiveRun, bound: inspect.BoundArguments, config: Config):
        self.run = run
        self.bound = bound
        self.config = config

    def arg(self, name: str, default: Any = None) -> Any:
        """An argument of the call by name, falling back to the signature's default."""
        if name in self.bound.arguments:
            return self.bound.arguments[name]
        p = self.bound.signature.parameters.get(name)
        if p is not None and p.default is not inspect.Parameter.empty:
            return p.default
        return default

    def kwarg(self, name: str) -> Any:
        """``name`` from the call's ``**kwargs`` (``fit(X, y, **fit_params)``), if any."""
        for p in self.bound.signature.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                return (self.bound.arguments.get(p.name) or {}).get(name)
        return None

    def safely(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one logging step; a failure is a warning, and the next steps still run."""
        try:
            return fn()
        except Exception as exc:
            warn(f"could not {what} for run {self.run.id}", exc)
            return None

    def before(self) -> None:
        pass

    def after(self, result: Any) -> None:
        pass


def patch(owner: Any, name: str, hook: type[Hook]) -> None:
    """Replace ``owner.name`` (a class's method or a module's function) by a logging wrapper."""
    with _lock:
        had_own = name in vars(owner)
        original = vars(owner)[name] if had_own else getattr(owner, name)
        wrapper = _wrapper(original, hook, _generation)
        _patches.append(_Patch(owner, name, original, had_own))
        setattr(owner, name, wrapper)


def enable(config: Config) -> None:
    global _config
    with _lock:
        _config = config


def unpatch_all() -> None:
    """Put back every original, newest patch first, and turn autologging off."""
    global _config, _generation
    with _lock:
        _config = None
        _generation += 1
        while _patches:
            p = _patches.pop()
            if p.had_own:
                setattr(p.owner, p.name, p.original)
            else:
                delattr(p.owner, p.name)


def _enter(generation: int) -> bool:
    global _busy
    with _lock:
        if _config is None or generation != _generation or _busy:
            return False
        _busy += 1
        return True


def _leave() -> None:
    global _busy
    with _lock:
        _busy -= 1


def _wrapper(original: Callable[..., Any], hook: type[Hook], generation: int) -> Callable[..., Any]:
    sig: list[inspect.Signature] = []

    @functools.wraps(original)
    def autologged(*args: Any, **kwargs: Any) -> Any:
        if not _enter(generation):
            return original(*args, **kwargs)
        try:
            cfg = _config
            try:
                if not sig:
                    sig.append(inspect.signature(original))
                bound = sig[0].bind(*args, **kwargs)
            except (TypeError, ValueError):  # a call the function itself will refuse
                return original(*args, **kwargs)
            return _call(original, hook, cfg or Config(), bound, args, kwargs)
        finally:
            _leave()

    return autologged


def _call(
    original: Callable[..., Any],
    hook_cls: type[Hook],
    cfg: Config,
    bound: inspect.BoundArguments,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    run: fluent.ActiveRun | None = None
    started = False
    hook: Hook | None = None
    call_args, call_kwargs = args, kwargs
    try:
        run = fluent.active_run()
        if run is None:
            run = fluent.start_run()
            started = True
        hook = hook_cls(run, bound, cfg)
        hook.before()
        call_args, call_kwargs = bound.args, bound.kwargs
    except Exception as exc:
        warn(f"could not start logging {getattr(original, '__qualname__', original)}", exc)
        hook = None
        call_args, call_kwargs = args, kwargs

    try:
        result = original(*call_args, **call_kwargs)
    except BaseException as exc:
        if started and run is not None:
            failed = RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
            _end(run, failed)
        raise

    if hook is not None:
        try:
            hook.after(result)
        except Exception as exc:
            warn(f"could not log {hook.flavor} results to run {hook.run.id}", exc)
    if started and run is not None:
        _end(run, RunStatus.FINISHED)
    return result


def _end(run: fluent.ActiveRun, status: RunStatus) -> None:
    try:
        run.end(status)
    except Exception as exc:
        warn(f"could not end run {run.id} as {status.value}", exc)
