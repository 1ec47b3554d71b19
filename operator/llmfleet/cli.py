"""The ``llmfleet`` command line: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``. Modules are imported only when their subcommand runs (or when help is
built), so ``llmfleet render`` never pays for kopf, torch or matplotlib: subcommand modules keep
heavy imports inside functions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("llmfleet.render.command", "print every child of an LLMService as a YAML stream"),
    "crd": ("llmfleet.crd", "generate the LLMService CustomResourceDefinition from the API models"),
    "run": ("llmfleet.runner", "run the operator (kopf) against the current cluster"),
    "simulate": (
        "llmfleet.sim.simulate",
        "replay a request trace against a simulated fleet and compare scalers",
    ),
    "sim-server": ("llmfleet.sim.server", "run a simulated OpenAI-compatible model server"),
    "gateway": ("llmfleet.gateway.command", "run the caching gateway in front of the load balancer"),
}


def _top_parser() -> argparse.ArgumentParser:
    from llmfleet import __version__

    parser = argparse.ArgumentParser(
        prog="llmfleet",
        description="Kubernetes operator and tools for LLM serving fleets. "
        "Run `llmfleet COMMAND --help` for a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """Build the parser of one subcommand, importing only that subcommand's module."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    doc = (module.__doc__ or help_text).strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog=f"llmfleet {name}",
        description=doc,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in COMMANDS:
        parser = _top_parser()
        parser.parse_args(args_list)  # prints help, version or a usage error
        parser.print_help()
        return 2
    parser, module = command_parser(args_list[0])
    args = parser.parse_args(args_list[1:])
    try:
        result: int = module.main(args)  # type: ignore[attr-defined]
    except BrokenPipeError:
        # The reader went away (`llmfleet render ... | head`): not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
