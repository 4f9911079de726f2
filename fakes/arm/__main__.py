"""``python -m fakes.arm``: run the fake ARM server until SIGTERM/SIGINT.

Prints, one per line and flushed, ``ARM_ENDPOINT=https://127.0.0.1:PORT``,
``ARM_CA_BUNDLE=/path/ca.pem`` and ``AZURE_AUTHORITY_HOST=…`` (also written to
``<state-dir>/endpoint.env``), then ``READY``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fakes.arm.config import ConfigError, FakeArmConfig
from fakes.arm.faults import FaultSpecError
from fakes.arm.hooks import DEFAULT_OBSERVER_FACTORY, PoolObserver
from fakes.arm.server import FakeArm


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fakes.arm", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    p.add_argument("--state-dir", type=Path, help="where the CA and endpoint.env live (default: a temp dir)")
    p.add_argument("--config", type=Path, help="JSON settings file (see fakes/arm/config.py)")
    p.add_argument(
        "--kubeconfig", type=Path, help="cluster for the node simulator (plugged in as an observer)"
    )
    p.add_argument(
        "--observer",
        default=None,
        help=f"MODULE:FACTORY called as FACTORY(kubeconfig=PATH) (default with --kubeconfig: {DEFAULT_OBSERVER_FACTORY})",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def load_observer(spec: str, kubeconfig: Path | None) -> PoolObserver:
    """Import ``MODULE:FACTORY`` (FACTORY may be dotted, e.g. ``Class.method``) and call it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"--observer must look like MODULE:FACTORY, not {spec!r}")
    try:
        factory: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"cannot load observer factory {spec!r}: {e}") from e
    observer = factory(kubeconfig=str(kubeconfig) if kubeconfig else None)
    if not isinstance(observer, PoolObserver):
        raise SystemExit(f"{spec} returned {observer!r}, which lacks on_pool_running/on_pool_deleted")
    return observer


async def _serve(args: argparse.Namespace) -> int:
    try:
        config = FakeArmConfig.from_file(args.config) if args.config else FakeArmConfig()
    except (ConfigError, FaultSpecError, TypeError) as e:
        print(f"fake ARM: bad config: {e}", file=sys.stderr)
        return 2
    observers: list[PoolObserver] = []
    spec = args.observer or (DEFAULT_OBSERVER_FACTORY if args.kubeconfig else None)
    if spec:
        observers.append(load_observer(spec, args.kubeconfig))
    try:
        arm = FakeArm(config, port=args.port, state_dir=args.state_dir, observers=observers)
    except (ConfigError, FaultSpecError, TypeError) as e:
        print(f"fake ARM: bad config: {e}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with arm:
            for key, value in arm.env().items():
                print(f"{key}={value}")
            print("READY", flush=True)
            await stop.wait()
    finally:
        for observer in observers:
            close = getattr(observer, "close", None)
            if close is not None and inspect.iscoroutinefunction(close):
                await close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
