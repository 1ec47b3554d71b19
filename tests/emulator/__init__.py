"""A Kubernetes API server stand-in for llmfleet's operator tests, built on KMock.

See docs/testing-apiserver.md. Entry points: :class:`ApiServer` (the emulator),
:class:`EmulatorThread` (runs it on loopback), :class:`Kube` (a thin sync client that also works
against a real cluster), and the pytest fixtures in :mod:`tests.emulator.fixtures`.
"""

from tests.emulator.apiserver import ApiServer, Fault, WriteRecord
from tests.emulator.client import Kube
from tests.emulator.resources import DEFAULT_RESOURCES, ResourceRegistry, ResourceType
from tests.emulator.runner import EmulatorThread

__all__ = [
    "DEFAULT_RESOURCES",
    "ApiServer",
    "EmulatorThread",
    "Fault",
    "Kube",
    "ResourceRegistry",
    "ResourceType",
    "WriteRecord",
]
