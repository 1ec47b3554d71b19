"""The ``llmfleet`` command line: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``. Modules are imported only when their subcommand runs (or when help is
built), so ``llmfleet render`` never pays for kopf, torch or matplotlib: subcommand modules keep
heavy imports inside functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("llmfleet.render.command", "print every child of an LLMService as a YAML stream"),
    "crd": ("llmfleet.crd", "generate the LLMService CustomResourceDefinition from the API models"),
    "run": ("llmfleet.runner", "run the operator (kopf) against the current cluster"),
    "simulate": ("llmfleet.sim.simulate", "replay a request trace against a simulated fleet and compare scalers"),
    "sim-server": ("llmfleet.sim.server", "run a simulated OpenAI-compatible model server"),
    "gateway": ("llmfleet.gateway.command", "run the caching gateway in front of the load balancer"),
}


def build_parser() -> argparse.ArgumentParser:
    from llmfleet import __version__

    parser = argparse.ArgumentParser(
        prog="llmfleet",
        description="Kubernetes operator and tools for LLM serving fleets.",
    )
    parser.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip().split("\n\n")[0],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args._module.main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
