"""Plant models stepped on a fixed step: Python classes, or an FMI 2.0 co-simulation FMU
through FMPy's ``FMU2Slave`` (imported lazily: the ``hil`` extra).

Every plant has the same surface: ``INPUTS``, ``OUTPUTS`` and ``PARAMS`` (name -> default),
``set(name, value)`` for an input, ``step(t_s, dt_s)`` and ``values()`` -> every input and
output by name. ``step`` raises PlantError when a value is not finite.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ._errors import PlantError


class Plant:
    INPUTS: tuple[str, ...] = ()
    OUTPUTS: tuple[str, ...] = ()
    PARAMS: dict[str, float] = {}

    def __init__(self, params: dict[str, float]):
        self.p = {**self.PARAMS, **params}
        self.u = dict.fromkeys(self.INPUTS, 0.0)
        self.y = dict.fromkeys(self.OUTPUTS, 0.0)

    def set(self, name: str, value: float) -> None:
        self.u[name] = float(value)

    def step(self, t_s: float, dt_s: float) -> None:
        self._step(dt_s)
        for k, v in self.y.items():
            if not math.isfinite(v):
                raise PlantError(f"plant output {k} is {v} at t={t_s:.3f} s")

    def _step(self, dt: float) -> None:
        raise NotImplementedError

    def values(self) -> dict[str, float]:
        return {**self.u, **self.y}

    def close(self) -> None:
        pass


class Motor(Plant):
    """An electric motor and its inverter. Losses grow with the square of the delivered load
    (``load`` 0..1 times ``throttle`` 0..1); the winding cools towards ambient::

        dT/dt = heat * (load * throttle * enable)^2 - cool * (T - ambient)      [°C/s]

    With the defaults full load settles at 145 °C (time constant 2 s), half throttle at 55 °C.
    """

    INPUTS = ("load", "throttle", "enable")
    OUTPUTS = ("temp_c", "speed_rpm", "current_a")
    PARAMS = {"heat": 60.0, "cool": 0.5, "ambient": 25.0, "rated_rpm": 3000.0, "rated_a": 40.0}

    def __init__(self, params: dict[str, float]):
        super().__init__(params)
        self.u.update(throttle=1.0, enable=1.0)
        self.y["temp_c"] = self.p["ambient"]

    def _step(self, dt: float) -> None:
        drive = self.u["load"] * self.u["throttle"] * self.u["enable"]
        t = self.y["temp_c"]
        self.y["temp_c"] = t + dt * (self.p["heat"] * drive * drive - self.p["cool"] * (t - self.p["ambient"]))
        self.y["speed_rpm"] = self.p["rated_rpm"] * self.u["throttle"] * self.u["enable"]
        self.y["current_a"] = self.p["rated_a"] * drive


class Tank(Plant):
    """A tank filled by a pump and drained through a valve (Torricelli outflow)::

        dlevel/dt = (pump * inflow - valve * outflow * sqrt(level)) / area       [fraction/s]

    ``overflow`` is 1 while the level is at the rim (the level is clamped to 0..1)."""

    INPUTS = ("pump", "valve")
    OUTPUTS = ("level", "overflow", "flow_in")
    PARAMS = {"inflow": 0.12, "outflow": 0.1, "area": 1.0, "level0": 0.3}

    def __init__(self, params: dict[str, float]):
        super().__init__(params)
        self.u.update(pump=1.0, valve=0.2)
        self.y["level"] = self.p["level0"]

    def _step(self, dt: float) -> None:
        lv = self.y["level"]
        d = (self.u["pump"] * self.p["inflow"] - self.u["valve"] * self.p["outflow"] * math.sqrt(max(lv, 0.0)))
        lv = lv + dt * d / self.p["area"]
        self.y["overflow"] = 1.0 if lv >= 1.0 else 0.0
        self.y["level"] = min(max(lv, 0.0), 1.0)
        self.y["flow_in"] = self.u["pump"] * self.p["inflow"]


class Vehicle(Plant):
    """Longitudinal dynamics: drive force from ``throttle`` 0..1, brake pressure from
    ``brake`` 0..1 through a first-order actuator, drag and rolling resistance::

        m dv/dt = throttle * f_drive - brake_bar * k_brake - c_drag v^2 - c_roll

    ``perception_health`` (an input the stimulus drives) is passed to the perception agent."""

    INPUTS = ("throttle", "brake", "perception_health")
    OUTPUTS = ("speed_mps", "brake_bar", "accel_mps2")
    PARAMS = {"mass": 1500.0, "f_drive": 4000.0, "k_brake": 120.0, "c_drag": 0.4,
              "c_roll": 150.0, "tau_brake": 0.15, "max_bar": 80.0, "v0": 20.0}

    def __init__(self, params: dict[str, float]):
        super().__init__(params)
        self.u.update(throttle=0.3, perception_health=1.0)
        self.y["speed_mps"] = self.p["v0"]

    def _step(self, dt: float) -> None:
        p, v = self.p, self.y["speed_mps"]
        want = p["max_bar"] * min(max(self.u["brake"], 0.0), 1.0)
        self.y["brake_bar"] += (want - self.y["brake_bar"]) * min(dt / p["tau_brake"], 1.0)
        resist = (p["c_drag"] * v * v + p["c_roll"]) if v > 0 else 0.0
        f = self.u["throttle"] * p["f_drive"] - self.y["brake_bar"] * p["k_brake"] - resist
        a = f / p["mass"]
        self.y["speed_mps"] = max(0.0, v + a * dt)
        self.y["accel_mps2"] = a


class Host(Plant):
    """A host running an agent whose CPU use follows its work (first order, ``tau`` s);
    ``restart`` > 0 (an instruction sets it) clears the runaway work and counts restarts."""

    INPUTS = ("work", "restart")
    OUTPUTS = ("cpu_usage", "restarts")
    PARAMS = {"tau": 0.3, "idle": 0.2}

    def __init__(self, params: dict[str, float]):
        super().__init__(params)
        self.y["cpu_usage"] = self.p["idle"]

    def _step(self, dt: float) -> None:
        if self.u["restart"] > 0:
            self.u["restart"] = 0.0
            self.u["work"] = self.p["idle"]
            self.y["restarts"] += 1
        c = self.y["cpu_usage"]
        self.y["cpu_usage"] = c + (min(self.u["work"], 1.0) - c) * min(dt / self.p["tau"], 1.0)


class Unstable(Plant):
    """A deliberately diverging system (``x' = gain * x``), for the rig's own tests."""

    INPUTS = ("u",)
    OUTPUTS = ("x",)
    PARAMS = {"gain": 5.0, "x0": 1.0}

    def __init__(self, params: dict[str, float]):
        super().__init__(params)
        self.y["x"] = self.p["x0"]

    def _step(self, dt: float) -> None:
        self.y["x"] = self.y["x"] * (1.0 + self.p["gain"] * dt) + self.u["u"] * dt
        if self.y["x"] > 1e300:
            self.y["x"] = math.inf


MODELS: dict[str, type[Plant]] = {"motor": Motor, "tank": Tank, "vehicle": Vehicle, "host": Host,
                                  "unstable": Unstable}


def fmu_variables(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(inputs, outputs) of an FMU's model description."""
    try:
        from fmpy import read_model_description
    except ImportError as exc:
        raise PlantError("FMU plants need FMPy: pip install 'edge-runtime[hil]'") from exc
    md = read_model_description(str(path))
    ins = tuple(v.name for v in md.modelVariables if v.causality == "input")
    outs = tuple(v.name for v in md.modelVariables if v.causality == "output")
    return ins, outs


class FmuPlant(Plant):
    """An FMI 2.0 co-simulation FMU stepped with ``doStep`` at the scenario's fixed step.
    Parameters go in as start values of the FMU's variables of the same name."""

    def __init__(self, path: Path, params: dict[str, float]):
        try:
            from fmpy import extract, read_model_description
            from fmpy.fmi2 import FMU2Slave
        except ImportError as exc:
            raise PlantError("FMU plants need FMPy: pip install 'edge-runtime[hil]'") from exc
        self._fmu: Any = None
        self._dir: str | None = None
        try:
            md = read_model_description(str(path))
            if md.coSimulation is None:
                raise PlantError(f"{path}: not a co-simulation FMU")
            self.INPUTS = tuple(v.name for v in md.modelVariables if v.causality == "input")
            self.OUTPUTS = tuple(v.name for v in md.modelVariables if v.causality == "output")
            self._vr = {v.name: v.valueReference for v in md.modelVariables}
            super().__init__(params)
            self._dir = extract(str(path))
            fmu = FMU2Slave(guid=md.guid, unzipDirectory=self._dir,
                            modelIdentifier=md.coSimulation.modelIdentifier, instanceName="plant")
            fmu.instantiate()
            self._fmu = fmu
            fmu.setupExperiment(startTime=0.0)
            fmu.enterInitializationMode()
            for k, v in params.items():
                if k in self._vr:
                    fmu.setReal([self._vr[k]], [v])
            fmu.exitInitializationMode()
            if self.INPUTS:  # the inputs start at the FMU's start values, as the Python models do
                start = fmu.getReal([self._vr[n] for n in self.INPUTS])
                self.u = dict(zip(self.INPUTS, (float(v) for v in start), strict=True))
            self._read()
        except PlantError:
            self.close()
            raise
        except Exception as exc:  # FMPy raises plain Exceptions for status codes
            self.close()
            raise PlantError(f"{path}: the FMU failed to load: {exc}") from exc
        self._t = 0.0

    def _read(self) -> None:
        names = list(self.OUTPUTS)
        vals = self._fmu.getReal([self._vr[n] for n in names])
        self.y = dict(zip(names, (float(v) for v in vals), strict=True))

    def _step(self, dt: float) -> None:
        try:
            if self.INPUTS:
                self._fmu.setReal([self._vr[n] for n in self.INPUTS], [self.u[n] for n in self.INPUTS])
            self._fmu.doStep(currentCommunicationPoint=self._t, communicationStepSize=dt)
            self._t += dt
            self._read()
        except Exception as exc:
            raise PlantError(f"the FMU failed to step at t={self._t:.3f} s: {exc}") from exc

    def close(self) -> None:
        import contextlib
        import shutil

        fmu, self._fmu = self._fmu, None
        if fmu is not None:
            with contextlib.suppress(Exception):
                fmu.terminate()
            with contextlib.suppress(Exception):
                fmu.freeInstance()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def make_plant(model: str, params: dict[str, float], fmu: Path | None = None) -> Plant:
    if model == "fmu":
        assert fmu is not None
        return FmuPlant(fmu, params)
    return MODELS[model](params)
