/* The motor and inverter plant of hil/_plants.py (Motor) as an FMI 2.0 co-simulation FMU,
 * explicit Euler inside doStep, the same equation as the Python model:
 *
 *     dT/dt = heat * (load * throttle * enable)^2 - cool * (T - ambient)
 *
 * Built by hil/_fmu.py against FMPy's copy of the FMI 2.0 headers. Two parameters exist for
 * the rig's own tests: fail_at (doStep returns fmi2Error from that time on, 0: never) and
 * nan_at (temp_c becomes NaN from that time on, 0: never). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fmi2Functions.h"

enum { LOAD, THROTTLE, ENABLE, TEMP, RPM, AMPS, HEAT, COOL, AMBIENT, RATED_RPM, RATED_A,
       FAIL_AT, NAN_AT, NVARS };

typedef struct { double v[NVARS]; double t; } Motor;

static void outputs(Motor *m) {
    double drive = m->v[LOAD] * m->v[THROTTLE] * m->v[ENABLE];
    m->v[RPM] = m->v[RATED_RPM] * m->v[THROTTLE] * m->v[ENABLE];
    m->v[AMPS] = m->v[RATED_A] * drive;
}

const char *fmi2GetTypesPlatform(void) { return fmi2TypesPlatform; }
const char *fmi2GetVersion(void) { return fmi2Version; }
fmi2Status fmi2SetDebugLogging(fmi2Component c, fmi2Boolean on, size_t n, const fmi2String cat[]) {
    (void)c; (void)on; (void)n; (void)cat; return fmi2OK;
}

fmi2Component fmi2Instantiate(fmi2String name, fmi2Type type, fmi2String guid, fmi2String res,
                              const fmi2CallbackFunctions *cb, fmi2Boolean vis, fmi2Boolean log) {
    (void)name; (void)res; (void)cb; (void)vis; (void)log;
    if (type != fmi2CoSimulation || strcmp(guid, "{hil-motor-1}") != 0) return NULL;
    Motor *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->v[THROTTLE] = 1.0; m->v[ENABLE] = 1.0; m->v[HEAT] = 60.0; m->v[COOL] = 0.5;
    m->v[AMBIENT] = 25.0; m->v[RATED_RPM] = 3000.0; m->v[RATED_A] = 40.0;
    m->v[TEMP] = m->v[AMBIENT];
    return m;
}

void fmi2FreeInstance(fmi2Component c) { free(c); }
fmi2Status fmi2SetupExperiment(fmi2Component c, fmi2Boolean tolDef, fmi2Real tol, fmi2Real t0,
                               fmi2Boolean stopDef, fmi2Real stop) {
    (void)tolDef; (void)tol; (void)stopDef; (void)stop; ((Motor *)c)->t = t0; return fmi2OK;
}
fmi2Status fmi2EnterInitializationMode(fmi2Component c) { (void)c; return fmi2OK; }
fmi2Status fmi2ExitInitializationMode(fmi2Component c) {
    Motor *m = c; m->v[TEMP] = m->v[AMBIENT]; outputs(m); return fmi2OK;
}
fmi2Status fmi2Terminate(fmi2Component c) { (void)c; return fmi2OK; }
fmi2Status fmi2Reset(fmi2Component c) { (void)c; return fmi2Error; }

fmi2Status fmi2GetReal(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Real v[]) {
    Motor *m = c;
    for (size_t i = 0; i < n; i++) { if (vr[i] >= NVARS) return fmi2Error; v[i] = m->v[vr[i]]; }
    return fmi2OK;
}
fmi2Status fmi2SetReal(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Real v[]) {
    Motor *m = c;
    for (size_t i = 0; i < n; i++) { if (vr[i] >= NVARS) return fmi2Error; m->v[vr[i]] = v[i]; }
    return fmi2OK;
}
fmi2Status fmi2GetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Integer v[]) { (void)c; (void)vr; (void)v; return n ? fmi2Error : fmi2OK; }
fmi2Status fmi2GetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Boolean v[]) { (void)c; (void)vr; (void)v; return n ? fmi2Error : fmi2OK; }
fmi2Status fmi2GetString(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2String v[]) { (void)c; (void)vr; (void)v; return n ? fmi2Error : fmi2OK; }
fmi2Status fmi2SetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Integer v[]) { (void)c; (void)vr; (void)v; return n ? fmi2Error : fmi2OK; }
fmi2Status fmi2SetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Boolean v[]) { (void)c; (void)vr; (void)v; return n ? fmi2Error : fmi2OK; }
fmi2Status fmi2SetString(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2String v[]) { (void)c; (void)vr; (void)v; return n ? fmi2Error : fmi2OK; }
fmi2Status fmi2GetFMUstate(fmi2Component c, fmi2FMUstate *s) { (void)c; (void)s; return fmi2Error; }
fmi2Status fmi2SetFMUstate(fmi2Component c, fmi2FMUstate s) { (void)c; (void)s; return fmi2Error; }
fmi2Status fmi2FreeFMUstate(fmi2Component c, fmi2FMUstate *s) { (void)c; (void)s; return fmi2Error; }
fmi2Status fmi2SerializedFMUstateSize(fmi2Component c, fmi2FMUstate s, size_t *n) { (void)c; (void)s; (void)n; return fmi2Error; }
fmi2Status fmi2SerializeFMUstate(fmi2Component c, fmi2FMUstate s, fmi2Byte b[], size_t n) { (void)c; (void)s; (void)b; (void)n; return fmi2Error; }
fmi2Status fmi2DeSerializeFMUstate(fmi2Component c, const fmi2Byte b[], size_t n, fmi2FMUstate *s) { (void)c; (void)s; (void)b; (void)n; return fmi2Error; }
fmi2Status fmi2GetDirectionalDerivative(fmi2Component c, const fmi2ValueReference u[], size_t nu,
                                        const fmi2ValueReference k[], size_t nk, const fmi2Real dk[], fmi2Real du[]) {
    (void)c; (void)u; (void)nu; (void)k; (void)nk; (void)dk; (void)du; return fmi2Error;
}
fmi2Status fmi2SetRealInputDerivatives(fmi2Component c, const fmi2ValueReference vr[], size_t n,
                                       const fmi2Integer o[], const fmi2Real v[]) {
    (void)c; (void)vr; (void)n; (void)o; (void)v; return fmi2Error;
}
fmi2Status fmi2GetRealOutputDerivatives(fmi2Component c, const fmi2ValueReference vr[], size_t n,
                                        const fmi2Integer o[], fmi2Real v[]) {
    (void)c; (void)vr; (void)n; (void)o; (void)v; return fmi2Error;
}

fmi2Status fmi2DoStep(fmi2Component c, fmi2Real t, fmi2Real h, fmi2Boolean noPrior) {
    Motor *m = c;
    (void)noPrior;
    if (m->v[FAIL_AT] > 0 && t >= m->v[FAIL_AT]) return fmi2Error;
    double drive = m->v[LOAD] * m->v[THROTTLE] * m->v[ENABLE];
    double temp = m->v[TEMP];
    m->v[TEMP] = temp + h * (m->v[HEAT] * drive * drive - m->v[COOL] * (temp - m->v[AMBIENT]));
    if (m->v[NAN_AT] > 0 && t >= m->v[NAN_AT]) m->v[TEMP] = NAN;
    outputs(m);
    m->t = t + h;
    return fmi2OK;
}
fmi2Status fmi2CancelStep(fmi2Component c) { (void)c; return fmi2Error; }
fmi2Status fmi2GetStatus(fmi2Component c, const fmi2StatusKind s, fmi2Status *v) { (void)c; (void)s; (void)v; return fmi2Discard; }
fmi2Status fmi2GetRealStatus(fmi2Component c, const fmi2StatusKind s, fmi2Real *v) {
    if (s != fmi2LastSuccessfulTime) return fmi2Discard;
    *v = ((Motor *)c)->t; return fmi2OK;
}
fmi2Status fmi2GetIntegerStatus(fmi2Component c, const fmi2StatusKind s, fmi2Integer *v) { (void)c; (void)s; (void)v; return fmi2Discard; }
fmi2Status fmi2GetBooleanStatus(fmi2Component c, const fmi2StatusKind s, fmi2Boolean *v) { (void)c; (void)s; (void)v; return fmi2Discard; }
fmi2Status fmi2GetStringStatus(fmi2Component c, const fmi2StatusKind s, fmi2String *v) { (void)c; (void)s; (void)v; return fmi2Discard; }
