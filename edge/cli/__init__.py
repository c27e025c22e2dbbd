"""edgectl: status, agents, rules, stats, tail, bench, demo."""

from ._client import CtlClient as CtlClient
from ._main import cli as cli
from ._main import main as main
