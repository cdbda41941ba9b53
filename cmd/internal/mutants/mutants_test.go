package mutants

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const header = `# mutant: skip-20th
# bug: the Azure side skips every 20th item
# scenario: demo
# killed-by: write-order
`

const diff = `diff --git a/x.go b/x.go
--- a/x.go
+++ b/x.go
@@ -1 +1 @@
-a
+b
`

func TestParse(t *testing.T) {
	m, err := Parse("dir/skip-20th.patch", []byte(header+diff))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "skip-20th" || m.Bug != "the Azure side skips every 20th item" || m.Scenario != "demo" || m.KilledBy != "write-order" {
		t.Errorf("parsed %+v", m)
	}
	if m, err := Parse("skip-20th.patch", []byte(strings.Replace(header, "# scenario: demo", "# scenario: regressions/swarm-2.scn", 1)+diff)); err != nil || m.Scenario != "regressions/swarm-2" {
		t.Errorf("a kept swarm failure as the scenario: %+v, %v", m, err)
	}
	for _, c := range []struct{ name, file, data, want string }{
		{"no killed-by", "skip-20th.patch", strings.Replace(header, "# killed-by: write-order\n", "", 1) + diff, "missing `# killed-by:`"},
		{"twice", "skip-20th.patch", header + "# bug: again\n" + diff, "bug: given twice"},
		{"no diff", "skip-20th.patch", header, "no `diff --git`"},
		{"name mismatch", "other.patch", header + diff, "does not match the file name"},
		{"two-word check", "skip-20th.patch", strings.Replace(header, "write-order", "write order", 1) + diff, "must be one word"},
		{"junk before diff", "skip-20th.patch", header + "junk\n" + diff, "want a `# key: value` header line"},
		{"a path, not a regression", "skip-20th.patch", strings.Replace(header, "# scenario: demo", "# scenario: testdata/demo", 1) + diff, "must be one word"},
	} {
		_, err := Parse(c.file, []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "mutants: ") {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestJudge(t *testing.T) {
	m := Mutant{Name: "x", Scenario: "demo", KilledBy: "write-order"}
	for _, c := range []struct {
		name  string
		code  int
		fs    []Failure
		have  bool
		want  Outcome
		check string
	}{
		{"all passed", 0, nil, true, Survived, ""},
		{"named check failed", 1, []Failure{{Check: "points", Subject: "db01"}, {Check: "write-order", Subject: "db01@rp-3"}}, true, Killed, "db01@rp-3"},
		{"another check failed", 1, []Failure{{Check: "points", Subject: "db01"}}, true, WrongCheck, "points db01"},
		{"script error", 1, []Failure{{Check: "script", Subject: "s.scn:3", Evidence: "error: boom\nmore"}}, true, KilledByCrash, "error: boom …"},
		{"died before the closing lines", 2, nil, false, KilledByCrash, ""},
		{"odd exit with no failure", 2, nil, true, KilledByCrash, ""},
	} {
		got, detail := Judge(m, c.code, c.fs, c.have, "panic: x\ngoroutine 1")
		if got != c.want || (c.check != "" && detail != c.check) {
			t.Errorf("%s: %s (%s), want %s (%s)", c.name, got, detail, c.want, c.check)
		}
		if got.Dead() != (c.want == Killed || c.want == KilledByCrash) {
			t.Errorf("%s: Dead()=%v", c.name, got.Dead())
		}
	}
	fs, err := ParseFailures([]byte(`{"check":"cut","subject":"orders","verdict":"ILLEGAL"}` + "\n\n"))
	if err != nil || len(fs) != 1 || fs[0].Check != "cut" {
		t.Errorf("ParseFailures: %+v, %v", fs, err)
	}
	if _, err := ParseFailures([]byte("{")); err == nil {
		t.Error("ParseFailures took a broken line")
	}
}

// fakeMain is a tiny stand-in for v2a: `run SCENARIO --failures F` writes a
// failed write-order check when planted is true.
const fakeMain = `package main

import "os"

const planted = false

func main() {
	f := os.Args[len(os.Args)-1]
	if planted {
		os.WriteFile(f, []byte("{\"check\":\"write-order\",\"subject\":\"db01@rp-1\",\"verdict\":\"ILLEGAL\"}\n"), 0o644)
		os.Exit(1)
	}
	if _, err := os.Stat("scenarios/" + "demo.scn"); err != nil {
		os.Exit(3) // the copy is incomplete
	}
	os.WriteFile(f, nil, 0o644)
}
`

// A fake repository with a fake v2a: a mutant that plants the bug is
// killed, one whose patch changes nothing that matters survives, one whose
// patch does not apply rotted — each judged through a real copy, git apply,
// go build and run; and no copy is left behind.
func TestSuiteOnAFakeTree(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the suite copies the tree git tracks")
	}
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module fake\n\ngo 1.26\n")
	write("cmd/v2a/main.go", fakeMain)
	write("scenarios/demo.scn", "world\n")
	write("untracked.txt", "not copied\n")
	run := func(args ...string) {
		t.Helper()
		c := exec.Command("git", args...)
		c.Dir = root
		c.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("init", "-q")
	run("add", "go.mod", "cmd", "scenarios")
	mk := func(name, from, to string) Mutant {
		p := "# mutant: " + name + "\n# bug: b\n# scenario: demo\n# killed-by: write-order\n" +
			"diff --git a/cmd/v2a/main.go b/cmd/v2a/main.go\n--- a/cmd/v2a/main.go\n+++ b/cmd/v2a/main.go\n" +
			"@@ -4,3 +4,3 @@ import \"os\"\n \n-" + from + "\n+" + to + "\n \n"
		m, err := Parse(name+".patch", []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ms := []Mutant{
		mk("planted", "const planted = false", "const planted = true"),
		mk("harmless", "const planted = false", "const planted = false // a comment"),
		mk("rotted", "const planted = maybe", "const planted = true"),
	}
	tmpBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "v2a-mutant-*"))
	s := &Suite{Root: root, Jobs: 2}
	rs := s.Run(context.Background(), ms)
	want := []Outcome{Killed, Survived, Rotted}
	for i, r := range rs {
		t.Log(r.Line())
		if r.Outcome != want[i] {
			t.Errorf("%s: %s (%s), want %s", r.Mutant.Name, r.Outcome, r.Detail, want[i])
		}
	}
	if !strings.Contains(rs[0].Line(), "mutant planted: killed by write-order in demo (") {
		t.Errorf("line: %s", rs[0].Line())
	}
	if !strings.Contains(rs[2].Detail, "no longer applies") {
		t.Errorf("rotted detail: %s", rs[2].Detail)
	}
	tmpAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "v2a-mutant-*"))
	if len(tmpAfter) > len(tmpBefore) {
		t.Errorf("copies left behind: %v", tmpAfter)
	}
}

// TestSwarmRange reads the `# scenario: swarm:FROM-TO` header both ways.
func TestSwarmRange(t *testing.T) {
	for _, tt := range []struct {
		in       string
		from, to string
		ok       bool
	}{
		{"swarm:1-40", "1", "40", true},
		{"swarm:7-7", "7", "7", true},
		{"demo", "", "", false},
		{"swarm:40-1", "", "", false},
		{"swarm:1", "", "", false},
		{"swarm:a-b", "", "", false},
		{"swarm:-3", "", "", false},
	} {
		from, to, ok := SwarmRange(tt.in)
		if from != tt.from || to != tt.to || ok != tt.ok {
			t.Errorf("SwarmRange(%q) = %q, %q, %v; want %q, %q, %v", tt.in, from, to, ok, tt.from, tt.to, tt.ok)
		}
	}
}
