package harness

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// TestPolicyCompression runs the same world twice, once with a policy that
// asks for s2 and once for zstd: the machine's items are sealed with its
// policy's codec, the status table says which, and its ratio — the true
// compression of the items uploaded — differs between the two, each in the
// range real data gives (not the ~65 that zero-padded records gave).
func TestPolicyCompression(t *testing.T) {
	ratio := map[string]float64{}
	for _, codec := range []string{"s2", "zstd"} {
		r := &Runner{Ctx: context.Background()}
		script := fmt.Sprintf(`world seed=3 machines=(db01) workload=bank

deploy

policy name=p compression=%s

protect vms=(db01) policy=p

wait state=protected timeout=1h

run for=10m

status
`, codec)
		ds, err := ParseScript("compression", []byte(script))
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for _, d := range ds {
			out = r.Exec(d)
			if strings.Contains(out, "error:") {
				r.Close()
				t.Fatalf("%s %s: %s", codec, d.Cmd, out)
			}
		}
		r.Close()
		t.Logf("%s:\n%s", codec, out)
		var row []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == "db01" {
				row = f
			}
		}
		if len(row) != 10 {
			t.Fatalf("%s: no db01 row of 10 columns in the status table:\n%s", codec, out)
		}
		if row[6] != codec {
			t.Errorf("status says codec %q, the policy asked for %s", row[6], codec)
		}
		v, err := strconv.ParseFloat(row[5], 64)
		if err != nil {
			t.Fatalf("%s: ratio %q: %v", codec, row[5], err)
		}
		ratio[codec] = v
		if v < 1.2 || v > 1.9 {
			t.Errorf("%s: ratio %.2f, want what real data gives (1.2-1.9)", codec, v)
		}
	}
	if ratio["zstd"] <= ratio["s2"] {
		t.Errorf("zstd ratio %.2f not above s2's %.2f: the policy's compression made no difference", ratio["zstd"], ratio["s2"])
	}
}
