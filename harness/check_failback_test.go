package harness

import (
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/impl/proto"
	simnet "github.com/v2a-dr/v2a/sim/net"
)

func TestJudgeVPNBytes(t *testing.T) {
	const disk = 64 << 20
	for _, tc := range []struct {
		name              string
		location          string
		synced            bool
		vpn, changed      int64
		want              Verdict
		evidenceSubstring string
	}{
		{"only the changed blocks", proto.LocationOriginal, true, 5 << 20, 5 << 20, OK, ""},
		{"headers within the allowance", proto.LocationOriginal, true, 5<<20 + 600<<10, 5 << 20, OK, ""},
		// The negative control: a reprotect that ignores the checksums
		// sends every allocated block of the disk.
		{"a full copy", proto.LocationOriginal, true, 40 << 20, 5 << 20, Illegal, "more than the blocks that differ"},
		{"nothing over the VPN", proto.LocationOriginal, true, 0, 5 << 20, Illegal, "some other way"},
		{"sync not complete", proto.LocationOriginal, false, 0, 0, Unknown, "nothing to measure"},
		{"alternate: a full copy is right", proto.LocationAlternate, true, 40 << 20, 5 << 20, OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := judgeVPNBytes("db01", tc.location, tc.synced, tc.vpn, tc.changed, disk)
			if r.Verdict != tc.want || !strings.Contains(r.Evidence, tc.evidenceSubstring) {
				t.Errorf("got %s (%s; %s), want %s with %q", r.Verdict, r.Evidence, r.Detail, tc.want, tc.evidenceSubstring)
			}
		})
	}
}

func TestJudgePath(t *testing.T) {
	site := map[string]simnet.Site{"cs01": simnet.OnPrem, "ps01": simnet.OnPrem, "db01": simnet.OnPrem, "blob": simnet.Azure,
		"ps-azure": simnet.Azure, "az-db01": simnet.Azure}
	onPrem := func(h string) bool { return site[h] == simnet.OnPrem }
	fb := func(h string) bool { return h == "ps-azure" || h == "az-db01" }
	good := map[simnet.PairKey]int64{
		{Path: simnet.PathLAN, From: "db01", To: "ps01"}:              100,
		{Path: simnet.PathInternet, From: "ps01", To: "blob"}:         80,
		{Path: simnet.PathLAN, From: "az-db01", To: "ps-azure"}:       50,
		{Path: simnet.PathVPN, From: "ps-azure", To: "cs01"}:          50,
		{Path: simnet.PathVPN, From: "cs01", To: "az-db01"}:           3,
		{Path: simnet.PathInternet, From: "cs01", To: "blob"}:         1,
		{Path: simnet.PathInternet, From: "blob", To: "cs01"}:         1,
		{Path: simnet.PathLAN, From: "ps-azure", To: "ps-azure-mgmt"}: 0,
	}
	for _, r := range judgePath(good, fb, onPrem) {
		if r.Verdict != OK {
			t.Errorf("good paths: %s %s: %s", r.Subject, r.Verdict, r.Evidence)
		}
	}
	verdicts := func(pairs map[simnet.PairKey]int64) map[string]Verdict {
		out := map[string]Verdict{}
		for _, r := range judgePath(pairs, fb, onPrem) {
			out[r.Subject] = r.Verdict
		}
		return out
	}
	// Negative controls: the Azure process server on a public endpoint
	// sends over the Internet; forward data on the VPN; nothing at all.
	public := map[simnet.PairKey]int64{
		{Path: simnet.PathInternet, From: "ps01", To: "blob"}:     80,
		{Path: simnet.PathInternet, From: "ps-azure", To: "cs01"}: 50,
	}
	if v := verdicts(public); v["failback"] != Illegal {
		t.Errorf("failback over the Internet judged %s", v["failback"])
	}
	fwdVPN := map[simnet.PairKey]int64{
		{Path: simnet.PathVPN, From: "ps01", To: "blob"}:      80,
		{Path: simnet.PathVPN, From: "ps-azure", To: "cs01"}:  50,
		{Path: simnet.PathInternet, From: "db01", To: "blob"}: 1,
	}
	if v := verdicts(fwdVPN); v["forward"] != Illegal {
		t.Errorf("forward over the VPN judged %s", v["forward"])
	}
	if v := verdicts(nil); v["forward"] != Unknown || v["failback"] != Unknown {
		t.Errorf("nothing carried judged %v, want unknown for both", v)
	}
}
