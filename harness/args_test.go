package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// Every directive of the shipped scenarios passes the key table: the table
// is complete for what the scenarios use (errors.scn is bad on purpose).
func TestShippedScenariosUseKnownKeys(t *testing.T) {
	files, _ := filepath.Glob("../scenarios/*.scn")
	more, _ := filepath.Glob("../scenarios/testdata/*.scn")
	files = append(files, more...)
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := ParseScript(f, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if strings.HasPrefix(d.Expected, "error:") {
				continue // bad input on purpose (errors.scn, fault-errors.scn)
			}
			n++
			if _, ok := commandKeys[d.Cmd]; !ok {
				t.Errorf("%s: command %q is not in commandKeys", d.Pos, d.Cmd)
			}
			if err := checkArgs(d.Cmd, d.Args); err != nil {
				t.Errorf("%s: %v", d.Pos, err)
			}
		}
	}
	if n < 50 {
		t.Fatalf("only %d directives in %d files: the scenarios were not found", n, len(files))
	}
	for _, c := range Commands {
		if _, ok := commandKeys[c]; !ok {
			t.Errorf("command %s has no entry in commandKeys", c)
		}
	}
}

func TestArgValidation(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"write vm=db01 of=4096", `write: unknown key "of" (write takes vm, disk, off, len, byte)`},
		{"write vm=db01 off=0 off=4096", "write: off= given twice"},
		{"fault loss p=0.1 vm=db01", `fault loss: unknown key "vm" (fault loss takes on, onhost, unfired, path, from, to, p)`},
		{"fault heal crash host=x", "fault: one fault per command, got heal and crash"},
		{"fault meteor", `fault: unknown fault "meteor"`},
		{"fault host=x", "fault: say which"},
		{"fault crash host", "fault crash: host needs a value"},
		{"network verbose", `network: unknown key "verbose" (network takes no keys)`},
		{"trace hash last=3", ""},
		{"fault clog factor=4 for=1h on=group-tag onhost=ord-db", ""},
	} {
		cmd, cas, err := datadriven.ParseLine(tc.line)
		if err != nil {
			t.Fatal(err)
		}
		err = checkArgs(cmd, cas)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want no error", tc.line, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.line, err, tc.want)
		}
	}
}

func TestArgRanges(t *testing.T) {
	a := argMap{"len": {"-1"}, "byte": {"999"}, "p": {"1.5"}, "q": {"-1"}, "bound": {"-1m"}, "nan": {"NaN"}, "ok": {"0x10"}, "bare": nil}
	if _, err := a.intIn("len", 4096, 1, 64<<20); err == nil || err.Error() != "len=-1: out of range (want 1 to 67108864)" {
		t.Errorf("len=-1: %v", err)
	}
	if _, err := a.intIn("byte", 0, 0, 255); err == nil || err.Error() != "byte=999: out of range (want 0 to 255)" {
		t.Errorf("byte=999: %v", err)
	}
	if _, err := a.floatIn("p", 0, 0, 1); err == nil || err.Error() != "p=1.5: out of range (want 0 to 1)" {
		t.Errorf("p=1.5: %v", err)
	}
	if _, err := a.floatIn("q", 0, 0, 1); err == nil {
		t.Error("p=-1 accepted")
	}
	if _, err := a.floatIn("nan", 0, 0, 1); err == nil {
		t.Error("NaN accepted")
	}
	if _, err := a.durMin("bound", 0, 1); err == nil || err.Error() != "bound=-1m: want a duration > 0" {
		t.Errorf("bound=-1m: %v", err)
	}
	if n, err := a.intIn("ok", 0, 0, 255); err != nil || n != 16 {
		t.Errorf("ok=0x10: %d, %v", n, err)
	}
	if _, err := a.intIn("bare", 1, 0, 9); err == nil {
		t.Error("a key with no value took the default")
	}
	if n, err := a.intIn("absent", 7, 0, 9); err != nil || n != 7 {
		t.Errorf("absent: %d, %v, want the default 7", n, err)
	}
}

// TestCommandTable: every command in the one table has a handler, a
// summary and an example that parses and passes its own argument check.
func TestCommandTable(t *testing.T) {
	if len(commands) != len(Commands) || len(commandKeys) != len(commands) {
		t.Fatalf("%d commands, %d names, %d key lists", len(commands), len(Commands), len(commandKeys))
	}
	for _, c := range commands {
		if c.run == nil || c.Summary == "" || c.Example == "" {
			t.Errorf("%s: handler, summary or example missing", c.Name)
			continue
		}
		cmd, cas, err := datadriven.ParseLine(c.Example)
		if err != nil || cmd != c.Name {
			t.Errorf("%s: example %q: %v (command %q)", c.Name, c.Example, err, cmd)
			continue
		}
		if err := checkArgs(cmd, cas); err != nil {
			t.Errorf("%s: example %q: %v", c.Name, c.Example, err)
		}
	}
}
