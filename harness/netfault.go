package harness

import (
	"fmt"
	"strings"
	"time"

	simnet "github.com/v2a-dr/v2a/sim/net"
)

// linkFault sets one direction of a path to jitter, duplicate or reorder
// its transfers:
//
//	fault jitter [path=lan] [from=onprem] [to=onprem] max=20ms
//	fault duplicate [path=lan] [from=onprem] [to=onprem] p=0.05
//	fault reorder [path=lan] [from=onprem] [to=onprem] p=0.1 window=10ms
//
// Each replaces only its own parameter of the link (max=0 or p=0 turns it
// off); `fault heal` does not undo them (it removes partitions and clogs).
func (r *Runner) linkFault(kind string, a argMap) (string, error) {
	msg, err := r.setLinkFault(kind, a)
	if err != nil && !strings.HasPrefix(err.Error(), "fault ") {
		err = fmt.Errorf("fault %s: %w", kind, err)
	}
	return msg, err
}

func (r *Runner) setLinkFault(kind string, a argMap) (string, error) {
	p := simnet.Path(a.str("path", "lan"))
	from, to := simnet.Site(a.str("from", "onprem")), simnet.Site(a.str("to", "onprem"))
	lp, ok := r.Env.Net.Link(p, from, to)
	if !ok {
		return "", fmt.Errorf("fault %s: no %s link %s->%s (paths: lan, internet, vpn; sites: onprem, azure)", kind, p, from, to)
	}
	switch kind {
	case "jitter":
		d, err := a.durMin("max", 20*time.Millisecond, 0)
		if err != nil {
			return "", err
		}
		lp.Jitter = d
	case "duplicate":
		prob, err := a.floatIn("p", 0.05, 0, 1)
		if err != nil {
			return "", err
		}
		lp.Dup = prob
	case "reorder":
		prob, err := a.floatIn("p", 0.1, 0, 1)
		if err != nil {
			return "", err
		}
		w, err := a.durMin("window", 10*time.Millisecond, 0)
		if err != nil {
			return "", err
		}
		lp.Reorder, lp.ReorderWindow = prob, w
	}
	if err := r.Env.Net.SetLink(p, from, to, lp); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s %s->%s%s", kind, p, from, to, linkExtras(lp)), nil
}

// linkExtras describes a link's jitter, duplication and reordering, ""
// when it has none.
func linkExtras(lp simnet.LinkParams) string {
	var parts []string
	if lp.Jitter > 0 {
		parts = append(parts, "jitter="+lp.Jitter.String())
	}
	if lp.Dup > 0 {
		parts = append(parts, fmt.Sprintf("dup=%g", lp.Dup))
	}
	if lp.Reorder > 0 {
		parts = append(parts, fmt.Sprintf("reorder=%g/%s", lp.Reorder, lp.ReorderWindow))
	}
	if len(parts) == 0 {
		return ""
	}
	return " " + strings.Join(parts, " ")
}
