"""``gpu-provisioner`` command line: ``controller`` runs the operator, ``version`` prints the version.

Every controller setting has a flag (``--registration-timeout``) and an environment variable
(``REGISTRATION_TIMEOUT_SECONDS``); flags win. Both are generated from ``provisioner.settings``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from provisioner import __version__
from provisioner.cloud.registry import (
    ProviderLoadError,
    ProviderNotFoundError,
    available_providers,
    unknown_provider_message,
)
from provisioner.settings import Settings, SettingsError, StartupError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-provisioner", description="GPU node provisioner for Karpenter claims."
    )
    parser.add_argument("--version", action="version", version=f"gpu-provisioner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="Print the version and exit.")
    ctl = sub.add_parser(
        "controller",
        help="Run the controller against $KUBECONFIG (or in-cluster credentials).",
        description="Run the controller. Each flag can also be set through the environment variable shown.",
    )
    ctl.add_argument("--kubeconfig", help="Path to a kubeconfig (default: $KUBECONFIG, then in-cluster).")
    for f in Settings.fields():
        env = f.metadata["env"]
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{f.metadata['help']} [env {env}; default {shown!s}]"
        if f.name == "cloud":
            help_text += f" Installed: {', '.join(available_providers())}."
        kwargs: dict[str, object] = {"dest": f.name, "default": None, "help": help_text, "metavar": env}
        if f.metadata["choices"]:
            kwargs["choices"] = f.metadata["choices"]
            kwargs.pop("metavar")
        ctl.add_argument(_flag(f.name), **kwargs)  # type: ignore[arg-type]
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """Flags given on the command line, keyed by env name (parsed like env values)."""
    return {
        f.metadata["env"]: getattr(args, f.name)
        for f in Settings.fields()
        if getattr(args, f.name) is not None
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"gpu-provisioner {__version__}")
        return 0
    try:
        settings = Settings.from_env({**os.environ, **_overrides(args)})
    except SettingsError as e:
        return _fail(e)
    if settings.cloud not in available_providers():
        return _fail(unknown_provider_message(settings.cloud))

    from provisioner import logs, operator

    logs.configure(
        settings.log_level, settings.log_format, secrets=[os.environ.get("AZURE_CLIENT_SECRET", "")]
    )
    try:
        return asyncio.run(operator.run(settings, kubeconfig=args.kubeconfig))
    except (ProviderLoadError, ProviderNotFoundError, StartupError) as e:
        # Misconfiguration (a missing ARM_SUBSCRIPTION_ID, a busy port, no API server): a clear
        # line per problem, not a traceback.
        return _fail(e)
    except KeyboardInterrupt:
        return 0


def _fail(problem: object) -> int:
    """Print each line of ``problem`` as ``gpu-provisioner: <line>`` on stderr; exit status 2."""
    for line in str(problem).strip().splitlines():
        if line.strip():
            print(f"gpu-provisioner: {line.strip()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
