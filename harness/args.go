package harness

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/datadriven"
)

// Commands' keys are in the command table (commands.go).

// faultKeys is each fault's keys (besides the bare kind itself and the
// trigger keys on=, onhost= and unfired=, which every fault takes).
var faultKeys = map[string][]string{
	"partition":       {"a", "b"},
	"heal":            {},
	"clog":            {"path", "from", "to", "factor", "for"},
	"loss":            {"path", "from", "to", "p"},
	"vpn":             {"state"},
	"crash":           {"host", "what"},
	"restart":         {"host", "what"},
	"machine-crash":   {"vm"},
	"machine-restart": {"vm"},
	"tear-hrl":        {"vm", "bytes"},
	"corrupt-hrl":     {"vm"},
	"jitter":          {"path", "from", "to", "max"},
	"duplicate":       {"path", "from", "to", "p"},
	"reorder":         {"path", "from", "to", "p", "window"},
	"corrupt-blob":    {"vm", "container"},
	"delete-snapshot": {"vm", "point"},
	"lose-cache":      {"host"},
}

// faultNames lists the faults in the order errors name them.
var faultNames = []string{"partition", "clog", "loss", "jitter", "duplicate", "reorder", "vpn", "crash", "restart", "lose-cache",
	"machine-crash", "machine-restart", "tear-hrl", "corrupt-hrl", "corrupt-blob", "delete-snapshot", "heal"}

// checkArgs rejects a directive whose keys its command does not take, or
// that gives a key twice. It runs before the handler, so a bad directive
// changes nothing.
func checkArgs(cmd string, cas []datadriven.CmdArg) error {
	known, ok := commandKeys[cmd]
	if !ok {
		return nil // an unknown command: the dispatcher says so
	}
	seen := map[string]bool{}
	for _, c := range cas {
		if seen[c.Key] {
			return fmt.Errorf("%s: %s= given twice", cmd, c.Key)
		}
		seen[c.Key] = true
	}
	if cmd == "fault" {
		return checkFaultArgs(cas)
	}
	for _, c := range cas {
		if !slices.Contains(known, c.Key) {
			return fmt.Errorf("%s: unknown key %q (%s takes %s)", cmd, c.Key, cmd, keyList(known))
		}
	}
	return nil
}

func checkFaultArgs(cas []datadriven.CmdArg) error {
	var kinds []string
	for _, c := range cas {
		if _, ok := faultKeys[c.Key]; ok && len(c.Vals) == 0 {
			kinds = append(kinds, c.Key)
		}
	}
	switch {
	case len(kinds) > 1:
		return fmt.Errorf("fault: one fault per command, got %s", strings.Join(kinds, " and "))
	case len(kinds) == 0:
		for _, c := range cas {
			if len(c.Vals) == 0 {
				return fmt.Errorf("fault: unknown fault %q (want %s)", c.Key, orList(faultNames))
			}
		}
		return fmt.Errorf("fault: say which: %s", orList(faultNames))
	}
	kind := kinds[0]
	known := append([]string{"on", "onhost", "unfired"}, faultKeys[kind]...)
	for _, c := range cas {
		if c.Key == kind {
			continue
		}
		if !slices.Contains(known, c.Key) {
			return fmt.Errorf("fault %s: unknown key %q (fault %s takes %s)", kind, c.Key, kind, keyList(known))
		}
		if len(c.Vals) == 0 {
			return fmt.Errorf("fault %s: %s needs a value (%s=...)", kind, c.Key, c.Key)
		}
	}
	return nil
}

// checkFaultValues checks the values of a fault's numeric keys with the
// same ranges its handler uses.
func checkFaultValues(kind string, a argMap) error {
	if _, ok := a["unfired"]; ok {
		switch u := a.str("unfired", ""); {
		case u != "ok" && u != "fail":
			return fmt.Errorf("fault %s: unfired=%s, want ok (the fault may legitimately not fire) or fail (the default: a fault that never fires fails the run)", kind, u)
		case a.str("on", "") == "" && kind != "corrupt-blob":
			return fmt.Errorf("fault %s: unfired= is for a fault armed to fire later (on=EVENT, or corrupt-blob): this one is injected now", kind)
		}
	}
	var err error
	switch kind {
	case "clog":
		if _, err = a.intIn("factor", 10, 1, 1<<20); err == nil {
			_, err = a.durMin("for", time.Hour, 1)
		}
	case "loss":
		_, err = a.floatIn("p", 0.1, 0, 1)
	case "duplicate":
		_, err = a.floatIn("p", 0.05, 0, 1)
	case "reorder":
		if _, err = a.floatIn("p", 0.1, 0, 1); err == nil {
			_, err = a.durMin("window", 10*time.Millisecond, 0)
		}
	case "jitter":
		_, err = a.durMin("max", 20*time.Millisecond, 0)
	case "tear-hrl":
		_, err = a.intIn("bytes", 37, 1, 1<<20)
	}
	return err
}

func keyList(keys []string) string {
	if len(keys) == 0 {
		return "no keys"
	}
	return strings.Join(keys, ", ")
}

func orList(xs []string) string {
	if len(xs) < 2 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// argError is a bad argument value; Exec prefixes it with the command.
type argError struct{ msg string }

func (e argError) Error() string { return e.msg }

func argErrorf(format string, args ...any) error { return argError{fmt.Sprintf(format, args...)} }

type argMap map[string][]string

func args(cas []datadriven.CmdArg) argMap {
	m := argMap{}
	for _, c := range cas {
		m[c.Key] = c.Vals
	}
	return m
}

func (a argMap) str(key, def string) string {
	if v, ok := a[key]; ok && len(v) > 0 {
		return v[0]
	}
	return def
}

func (a argMap) list(key string) []string { return a[key] }

// int is an integer argument; any value is allowed (see intIn).
func (a argMap) int(key string, def int64) (int64, error) {
	return a.intIn(key, def, math.MinInt64, math.MaxInt64)
}

// intIn is an integer argument in [lo, hi]. A key given with no value
// (`write off`) is an error, not the default.
func (a argMap) intIn(key string, def, lo, hi int64) (int64, error) {
	v, ok := a[key]
	if !ok {
		return def, nil
	}
	if len(v) != 1 {
		return 0, argErrorf("%s: want one integer, as %s=N", key, key)
	}
	n, err := strconv.ParseInt(v[0], 0, 64)
	if err != nil {
		return 0, argErrorf("%s=%s: not an integer", key, v[0])
	}
	if n < lo || n > hi {
		return 0, argErrorf("%s=%s: out of range (want %s)", key, v[0], rangeText(lo, hi))
	}
	return n, nil
}

func rangeText(lo, hi int64) string {
	switch {
	case hi == math.MaxInt64 && lo == math.MinInt64:
		return "any integer"
	case hi == math.MaxInt64:
		return fmt.Sprintf(">= %d", lo)
	case lo == math.MinInt64:
		return fmt.Sprintf("<= %d", hi)
	}
	return fmt.Sprintf("%d to %d", lo, hi)
}

// float is a number argument; any value is allowed (see floatIn).
func (a argMap) float(key string, def float64) (float64, error) {
	return a.floatIn(key, def, math.Inf(-1), math.Inf(1))
}

// floatIn is a number in [lo, hi].
func (a argMap) floatIn(key string, def, lo, hi float64) (float64, error) {
	v, ok := a[key]
	if !ok {
		return def, nil
	}
	if len(v) != 1 {
		return 0, argErrorf("%s: want one number, as %s=X", key, key)
	}
	f, err := strconv.ParseFloat(v[0], 64)
	if err != nil || math.IsNaN(f) {
		return 0, argErrorf("%s=%s: not a number", key, v[0])
	}
	if f < lo || f > hi {
		if math.IsInf(hi, 1) {
			return 0, argErrorf("%s=%s: out of range (want >= %g)", key, v[0], lo)
		}
		return 0, argErrorf("%s=%s: out of range (want %g to %g)", key, v[0], lo, hi)
	}
	return f, nil
}

// dur is a duration argument; any value is allowed (see durMin).
func (a argMap) dur(key string, def time.Duration) (time.Duration, error) {
	return a.durMin(key, def, math.MinInt64)
}

// durMin is a duration of at least min (0: zero allowed, 1ns: must be
// positive).
func (a argMap) durMin(key string, def, min time.Duration) (time.Duration, error) {
	v, ok := a[key]
	if !ok {
		return def, nil
	}
	if len(v) != 1 {
		return 0, argErrorf("%s: want one duration, as %s=10m", key, key)
	}
	d, err := time.ParseDuration(v[0])
	if err != nil {
		return 0, argErrorf("%s=%s: not a duration (e.g. 90s, 10m, 2h)", key, v[0])
	}
	switch {
	case d >= min:
	case min == 0:
		return 0, argErrorf("%s=%s: want a duration >= 0", key, v[0])
	case min == 1:
		return 0, argErrorf("%s=%s: want a duration > 0", key, v[0])
	default:
		return 0, argErrorf("%s=%s: want a duration >= %s", key, v[0], min)
	}
	return d, nil
}

// need is a required argument with one value.
func (a argMap) need(key string) (string, error) {
	v, ok := a[key]
	if !ok || len(v) == 0 {
		return "", argErrorf("missing %s=", key)
	}
	return v[0], nil
}
