"""The ctl.sock client (edge.runtime.CtlClient), re-exported for edgectl's modules."""

from ..runtime import CtlClient as CtlClient
