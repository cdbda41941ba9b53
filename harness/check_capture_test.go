package harness

import (
	"testing"

	"github.com/v2a-dr/v2a/impl/agent"
)

// TestCheckCaptureVerdicts is the capture check's negative control: each
// way a crash can go wrong is Illegal, nothing to judge is Unknown.
func TestCheckCaptureVerdicts(t *testing.T) {
	f1, f2 := &agent.Filter{}, &agent.Filter{}
	tests := []struct {
		name  string
		crash captureCrash
		want  Verdict
	}{
		{"machine crash, exact resync", captureCrash{vm: "db01", whole: true, want: 12, got: 12, attached: true}, OK},
		{"machine crash, a block missed", captureCrash{vm: "db01", whole: true, want: 12, got: 11, attached: true}, Illegal},
		{"machine crash, more than written", captureCrash{vm: "db01", whole: true, want: 12, got: 13, attached: true}, Illegal},
		{"machine crash, no bitmap resync", captureCrash{vm: "db01", whole: true, want: 12, got: -1, attached: true}, Illegal},
		{"machine crash, bad boundary", captureCrash{vm: "db01", whole: true, want: -2, attached: true}, Illegal},
		{"machine crash, not restarted", captureCrash{vm: "db01", whole: true, want: 12, got: -1}, Unknown},
		{"agent crash, filter lived on", captureCrash{vm: "db01", filter: f1, resolved: true, survivor: f1}, OK},
		{"agent crash, filter replaced", captureCrash{vm: "db01", filter: f1, resolved: true, survivor: f2}, Illegal},
		{"agent crash, filter reopened", captureCrash{vm: "db01", filter: f1, resolved: true, survivor: f1, reopened: true}, Illegal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.crash
			d := &Deployment{guests: map[string]*simGuest{}, captureCrashes: []*captureCrash{&c}}
			rs := d.CheckCapture()
			if len(rs) != 1 || rs[0].Verdict != tt.want {
				t.Fatalf("CheckCapture = %v, want one %s", rs, tt.want)
			}
		})
	}
	if rs := (&Deployment{}).CheckCapture(); len(rs) != 1 || rs[0].Verdict != Unknown {
		t.Errorf("no crash: %v, want Unknown", rs)
	}
}
