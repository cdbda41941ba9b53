// Package archtest enforces v2a's architecture rules on impl/ (DESIGN.md,
// "Layers" and "Determinism"):
//
//   - no package under impl/ imports, or depends on, a package under sim/
//     or harness/ — not even from its tests;
//   - component code (every non-test file under impl/ outside the allow-list
//     below) does not read the clock or sleep (time.Now, time.Sleep, timers,
//     tickers), start goroutines, draw from the global math/rand sources, or
//     dial or listen on the network. Those belong to the runtime: the
//     simulator must be able to drive every component deterministically;
//   - component code makes no context of its own (context.Background,
//     context.TODO): an Op's Run gets its context from the runtime, which
//     cancels it on a crash or Stop (contextAllowList excepted);
//   - component code declares no sync.Mutex or sync.RWMutex: an actor's
//     state is owned by its turn and read through the runtime's Inspect,
//     never guarded for another goroutine (mutexAllowList excepted, each
//     entry with its reason);
//   - a component's Handle reaches no file I/O (the fsys port, the change
//     log's files, a guest disk, Guest.Freeze) outside an Op's Run
//     (io_test.go, type-checked against `go list -export` data;
//     ioAllowList excepted, each entry with its reason).
//
// The checks parse source with go/parser (and go/types with the export
// data of `go list -export`) and ask `go list` for imports, so the module
// needs no dependency on golang.org/x/tools.
package archtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// allowList names the packages that may use the clock, goroutines, global
// randomness and the network: the real runtime and the port adapters, which
// are the edges where v2a meets the real world. Patterns:
//
//	"impl/x"       exactly the package in impl/x
//	"impl/x/..."   impl/x and every package below it
//	"impl/x/*/..." every package strictly below impl/x (impl/x itself, the
//	               port interface components use, stays checked)
//
// The layer rule (no sim/, no harness/) has no exceptions.
var allowList = []struct {
	pattern string
	why     string
}{
	{"impl/runtime", "the Real runtime: actors' goroutines, timers, the clock and TCP live here"},
	{"impl/blob/azblob/...", "blob adapter: the azblob SDK (Azure and Azurite) does its own I/O"},
	{"impl/vsphere/*/...", "vSphere adapters (govmomi against vCenter or vcsim); impl/vsphere is the port"},
	{"impl/compute/azarm/...", "Azure compute adapter: the armcompute/armnetwork SDKs do their own I/O; impl/compute is the port, impl/compute/memfabric an in-memory fabric held to the component rules"},
	{"impl/csstore/sqlite", "configuration-server store adapter: database/sql and the SQLite driver do their own I/O, locking and fsyncs"},
	{"impl/compute/computetest", "the compute conformance suite, a test driver: it sleeps between polls of a real-time fabric and makes its own root context"},
}

// fileAllowList names the component packages that may do file I/O with
// package os directly (same patterns as allowList). Every other component
// keeps its files through the fsys port, so that a simulation can give it a
// disk that loses unsynced writes on a crash (sim/simfs).
var fileAllowList = []struct {
	pattern string
	why     string
}{
	{"impl/fsys", "fsys.OS is the port's real implementation: a thin wrapper over os"},
	{"impl/csstore/sqlite", "the SQLite database file, written and fsynced by SQLite itself (WAL, synchronous=FULL): a committed transaction is on the disk, so a simulated crash has nothing unsynced of it to lose"},
	{"impl/blockdev", "the guest disk device (an *os.File on a disk image or block device), not a file a component keeps; simulated guest disks are write-through (sim/disk)"},
}

// contextAllowList names the component packages that may make a root
// context (same patterns as allowList): test drivers, which have no
// runtime above them.
var contextAllowList = []struct {
	pattern string
	why     string
}{
	{"impl/runtime/runtimetest", "the unit-test driver runs an op synchronously inside the test: nothing can cancel it"},
	{"impl/blob/blobtest", "the blob conformance suite, run by tests against each backend"},
	{"impl/csstore/csstoretest", "the configuration-server store conformance suite, run by tests against each backend"},
}

// mutexAllowList names the files of component packages that may declare a
// mutex, and why: none of them guards an actor's state for a status reader.
var mutexAllowList = []struct {
	file string
	why  string
}{
	{"impl/agent/filter.go", "the filter driver sits in the guest's write path: the guest's I/O thread and the agent's drainer call it concurrently in a real kernel"},
	{"impl/agent/gate.go", "the filter's write gate, also in the guest's write path: the guest's I/O thread asks Admit while the agent holds and releases"},
	{"impl/wire/wire.go", "the message registry is filled by init functions and read by every goroutine that decodes a frame"},
	{"impl/csstore/sqlite/sqlite.go", "Close may come from the daemon's shutdown while a late Op still holds the store (Real runtime); the mutex guards only the closed flag"},
	{"impl/blob/memblob/memblob.go", "an in-memory blob store shared by actors that, under the Real runtime, run on different goroutines"},
	{"impl/compute/memfabric/memfabric.go", "an in-memory Azure fabric shared by actors that, under the Real runtime, run on different goroutines"},
}

func contextAllowed(dir string) bool { return matches(contextAllowList, dir) }

func mutexAllowed(file string) bool {
	for _, a := range mutexAllowList {
		if a.file == file {
			return true
		}
	}
	return false
}

// fileAllowed reports whether the package in dir is on fileAllowList.
func fileAllowed(dir string) bool { return matches(fileAllowList, dir) }

// allowed reports whether the package in dir (slash-separated, relative to
// the module root) is on the allow-list.
func allowed(dir string) bool { return matches(allowList, dir) }

func matches(list []struct{ pattern, why string }, dir string) bool {
	for _, a := range list {
		switch {
		case strings.HasSuffix(a.pattern, "/*/..."):
			if strings.HasPrefix(dir, strings.TrimSuffix(a.pattern, "*/...")) {
				return true
			}
		case strings.HasSuffix(a.pattern, "/..."):
			base := strings.TrimSuffix(a.pattern, "/...")
			if dir == base || strings.HasPrefix(dir, base+"/") {
				return true
			}
		default:
			if dir == a.pattern {
				return true
			}
		}
	}
	return false
}

// violation is one broken rule at one place.
type violation struct {
	Pos  string // file:line:col
	Rule string // "layer", "clock", "goroutine", "rand", "net"
	What string
}

func (v violation) String() string { return fmt.Sprintf("%s: [%s] %s", v.Pos, v.Rule, v.What) }

// Forbidden selectors per standard package.
var (
	clockFuncs = set("Now", "Since", "Until", "Sleep", "After", "AfterFunc", "Tick", "NewTimer", "NewTicker")
	// randAllowed are the math/rand and math/rand/v2 names that do not touch
	// the global source: constructors of seeded sources and their types.
	randAllowed = set("New", "NewPCG", "NewChaCha8", "NewSource", "NewZipf",
		"Rand", "Source", "Source64", "PCG", "ChaCha8", "Zipf")
	// fileFuncs are the os functions that touch files by name: components
	// use the fsys port instead (fileAllowList excepted).
	fileFuncs = set("OpenFile", "Open", "Create", "CreateTemp", "ReadFile", "WriteFile", "ReadDir",
		"Mkdir", "MkdirAll", "MkdirTemp", "Remove", "RemoveAll", "Rename", "Truncate")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// layered reports whether path is a package under module/sim or
// module/harness.
func layered(module, path string) bool {
	for _, top := range []string{"/sim", "/harness"} {
		p := module + top
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// checkSource checks one file's source. When component is false (an
// allow-listed package) only the layer rule applies. Imports are resolved
// per file, aliases included; an identifier that the parser resolves to a
// local declaration (a variable named time, say) is not the package.
func checkSource(fset *token.FileSet, filename string, src []byte, module string, component bool) ([]violation, error) {
	return checkSourceRules(fset, filename, src, module, component, component)
}

// checkSourceRules is checkSource with the file-I/O rule (no os file
// functions: use fsys) switched separately.
func checkSourceRules(fset *token.FileSet, filename string, src []byte, module string, component, files bool) ([]violation, error) {
	return checkFile(fset, filename, src, module, rules{component: component, files: files, context: component, mutex: component})
}

// rules says which rules apply to a file: component switches the
// determinism rules (clock, goroutines, rand, net); files, context and
// mutex the file-I/O, root-context and mutex rules, each with its own
// allow-list.
type rules struct{ component, files, context, mutex bool }

func checkFile(fset *token.FileSet, filename string, src []byte, module string, r rules) ([]violation, error) {
	component, files := r.component, r.files
	f, err := parser.ParseFile(fset, filename, src, 0) // with object resolution: see id.Obj below
	if err != nil {
		return nil, err
	}
	var out []violation
	add := func(p token.Pos, rule, format string, args ...any) {
		out = append(out, violation{Pos: fset.Position(p).String(), Rule: rule, What: fmt.Sprintf(format, args...)})
	}
	local := map[string]string{} // name in this file -> "time", "math/rand", "math/rand/v2", "net"
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if layered(module, path) {
			add(imp.Pos(), "layer", "imports %s: impl must not import sim/ or harness/", path)
			continue
		}
		if !component {
			continue
		}
		var def string
		switch path {
		case "time":
			def = "time"
		case "math/rand", "math/rand/v2":
			def = "rand"
		case "net":
			def = "net"
		case "os":
			if !files {
				continue
			}
			def = "os"
		case "context":
			if !r.context {
				continue
			}
			def = "context"
		case "sync":
			if !r.mutex {
				continue
			}
			def = "sync"
		default:
			continue
		}
		name := def
		if imp.Name != nil {
			name = imp.Name.Name
		}
		switch name {
		case "_":
			continue
		case ".":
			add(imp.Pos(), "import", "dot import of %s hides its calls from this check", path)
			continue
		}
		local[name] = path
	}
	if !component {
		return out, nil
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			add(n.Go, "goroutine", "go statement: start work with Context.Start")
		case *ast.SelectorExpr:
			id, ok := n.X.(*ast.Ident)
			if !ok || id.Obj != nil { //nolint:staticcheck // Obj tells a local variable from the package
				return true
			}
			path, ok := local[id.Name]
			if !ok {
				return true
			}
			sel := n.Sel.Name
			switch {
			case path == "time" && clockFuncs[sel]:
				add(n.Pos(), "clock", "time.%s: use Context.Now / Context.After", sel)
			case (path == "math/rand" || path == "math/rand/v2") && !randAllowed[sel]:
				add(n.Pos(), "rand", "%s.%s uses the global source: use Context.Rand", path, sel)
			case path == "net" && (strings.HasPrefix(sel, "Dial") || strings.HasPrefix(sel, "Listen")):
				add(n.Pos(), "net", "net.%s: send with Context.Send; sockets are the runtime's", sel)
			case path == "os" && fileFuncs[sel]:
				add(n.Pos(), "file", "os.%s: keep files through an fsys.FS (Config.FS), so a simulation can crash the disk", sel)
			case path == "context" && (sel == "Background" || sel == "TODO"):
				add(n.Pos(), "context", "context.%s: use the context an Op's Run is given; the runtime cancels it", sel)
			case path == "sync" && (sel == "Mutex" || sel == "RWMutex"):
				add(n.Pos(), "mutex", "sync.%s: an actor's state is read on its turn (runtime.Inspect), not locked", sel)
			}
		}
		return true
	})
	return out, nil
}

// moduleRoot finds go.mod above the working directory and returns its
// directory and module path.
func moduleRoot(t *testing.T) (root, module string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
					return dir, strings.Trim(strings.TrimSpace(rest), `"`)
				}
			}
			t.Fatalf("%s/go.mod names no module", dir)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// checkTree checks every non-test .go file under root/impl and returns the
// violations and how many files it read.
func checkTree(root, module string, honourAllowList bool) ([]violation, int, error) {
	fset := token.NewFileSet()
	var out []violation
	files := 0
	err := filepath.WalkDir(filepath.Join(root, "impl"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if name == "testdata" || (path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		dir := filepath.ToSlash(filepath.Dir(rel))
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		component := !(honourAllowList && allowed(dir))
		r := rules{
			component: component,
			files:     component && !(honourAllowList && fileAllowed(dir)),
			context:   component && !(honourAllowList && contextAllowed(dir)),
			mutex:     component && !(honourAllowList && mutexAllowed(filepath.ToSlash(rel))),
		}
		vs, err := checkFile(fset, filepath.ToSlash(rel), src, module, r)
		if err != nil {
			// A file that does not parse cannot be checked; it will not
			// build either, but say so here rather than pass it.
			out = append(out, violation{Pos: filepath.ToSlash(rel), Rule: "parse", What: err.Error()})
			return nil
		}
		out = append(out, vs...)
		return nil
	})
	return out, files, err
}

// listedPackage is the part of `go list -json` output the layer check reads.
type listedPackage struct {
	ImportPath   string
	Imports      []string
	Deps         []string
	TestImports  []string
	XTestImports []string
}

// importViolations reports every package that imports or depends on sim/
// or harness/.
func importViolations(module string, pkgs []listedPackage) []string {
	var out []string
	for _, p := range pkgs {
		direct := map[string]bool{}
		for _, field := range []struct {
			how   string
			paths []string
		}{
			{"imports", p.Imports},
			{"imports in its tests", p.TestImports},
			{"imports in its external tests", p.XTestImports},
		} {
			for _, imp := range field.paths {
				if layered(module, imp) {
					direct[imp] = true
					out = append(out, fmt.Sprintf("%s %s %s", p.ImportPath, field.how, imp))
				}
			}
		}
		for _, dep := range p.Deps {
			if layered(module, dep) && !direct[dep] {
				out = append(out, fmt.Sprintf("%s depends on %s (through another package)", p.ImportPath, dep))
			}
		}
	}
	sort.Strings(out)
	return out
}

func goList(t *testing.T, root string) []listedPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(goruntime.GOROOT(), "bin", "go")
	}
	// -e: a package that does not compile (someone's work in progress) is
	// still listed with the imports its files declare.
	cmd := exec.Command(goBin, "list", "-e", "-json=ImportPath,Imports,Deps,TestImports,XTestImports", "./impl/...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestImplImportsNeitherSimNorHarness is the layer rule on the real tree.
func TestImplImportsNeitherSimNorHarness(t *testing.T) {
	root, module := moduleRoot(t)
	pkgs := goList(t, root)
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages under impl/: the check checked nothing")
	}
	for _, v := range importViolations(module, pkgs) {
		t.Error(v)
	}
}

// TestImplSourceRules is the determinism rule on the real tree.
func TestImplSourceRules(t *testing.T) {
	root, module := moduleRoot(t)
	vs, files, err := checkTree(root, module, true)
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no .go files under impl/: the check checked nothing")
	}
	for _, v := range vs {
		t.Error(v)
	}
	// Live negative control: without the allow-list the real runtime's own
	// files must be reported, which shows the walk and the checker reach
	// real code.
	all, _, err := checkTree(root, module, false)
	if err != nil {
		t.Fatal(err)
	}
	var inRuntime int
	for _, v := range all {
		if strings.HasPrefix(v.Pos, "impl/runtime/") {
			inRuntime++
		}
	}
	if inRuntime == 0 {
		t.Error("ignoring the allow-list, impl/runtime shows no violations: the checker cannot see goroutines or the clock")
	}
}

// TestCheckSource is the negative control: sources that break each rule
// must be reported, at the right line, and clean ones must not.
func TestCheckSource(t *testing.T) {
	const module = "github.com/v2a-dr/v2a"
	type found struct {
		Line int
		Rule string
	}
	for _, tc := range []struct {
		name      string
		src       string
		component bool
		want      []found
	}{
		{"clean component", `package c
import (
	"math/rand/v2"
	"net"
	"time"
)
func f(d time.Duration, seed uint64) (*rand.Rand, string, time.Time) {
	time := struct{ Now func() int }{}  // a local named time is not the package
	_ = time.Now
	return rand.New(rand.NewPCG(seed, 1)), net.JoinHostPort("h", "1"), timeZero
}
var timeZero = time.Time{}
`, true, nil},
		{"time.Now and friends", `package c
import "time"
func f() {
	_ = time.Now()
	time.Sleep(time.Second)
	<-time.After(1)
	_ = time.Since(time.Time{})
	g := time.Now
	_ = g
}
`, true, []found{{4, "clock"}, {5, "clock"}, {6, "clock"}, {7, "clock"}, {8, "clock"}}},
		{"aliased imports", `package c
import (
	clk "time"
	mrand "math/rand"
	n "net"
)
func f() {
	clk.AfterFunc(1, nil)
	_ = mrand.Intn(3)
	_, _ = n.Dial("tcp", "x:1")
	_ = mrand.New(mrand.NewSource(1))
}
`, true, []found{{8, "clock"}, {9, "rand"}, {10, "net"}}},
		{"go statement", `package c
func f() {
	go f()
}
`, true, []found{{3, "goroutine"}}},
		{"global rand v2", `package c
import "math/rand/v2"
func f() int64 { return rand.Int64() + int64(rand.IntN(2)) }
`, true, []found{{3, "rand"}, {3, "rand"}}},
		{"net dial and listen", `package c
import "net"
func f() {
	var d net.Dialer
	_ = d
	_, _ = net.DialTimeout("tcp", "x:1", 0)
	_, _ = net.Listen("tcp", ":0")
}
`, true, []found{{4, "net"}, {6, "net"}, {7, "net"}}},
		{"imports sim and harness", `package c
import (
	_ "github.com/v2a-dr/v2a/sim/sched"
	"github.com/v2a-dr/v2a/harness"
	_ "github.com/v2a-dr/v2a/simulation" // another tree: fine
)
var _ = harness.X
`, true, []found{{3, "layer"}, {4, "layer"}}},
		{"root contexts", `package c
import (
	"context"
	stdctx "context"
)
func f(ctx context.Context) {
	_ = context.Background()
	_ = stdctx.TODO()
	_, cancel := context.WithCancel(ctx) // derived from the op's: fine
	cancel()
}
`, true, []found{{7, "context"}, {8, "context"}}},
		{"mutex for status", `package c
import "sync"
type server struct {
	mu    sync.Mutex
	rw    *sync.RWMutex
	once  sync.Once // not a lock on state a reader shares: fine
	state int
}
`, true, []found{{4, "mutex"}, {5, "mutex"}}},
		{"dot import", `package c
import . "time"
func f() { _ = Now() }
`, true, []found{{2, "import"}}},
		{"allow-listed package may use the clock but not sim", `package c
import (
	"time"
	"github.com/v2a-dr/v2a/sim"
)
func f() { go time.Sleep(1); _ = sim.X }
`, false, []found{{4, "layer"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs, err := checkSource(token.NewFileSet(), "c.go", []byte(tc.src), module, tc.component)
			if err != nil {
				t.Fatal(err)
			}
			var got []found
			for _, v := range vs {
				line, _ := strconv.Atoi(strings.Split(v.Pos, ":")[1])
				got = append(got, found{line, v.Rule})
				if !strings.HasPrefix(v.Pos, "c.go:") {
					t.Errorf("violation %v does not name the file", v)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("violations (-want +got):\n%s\nall: %v", diff, vs)
			}
		})
	}
}

// TestMutexAndContextAllowLists: every allow-listed file exists and
// declares the mutex it is excused for (an entry that no longer excuses
// anything must go), and without the allow-lists the real tree's
// excused mutexes and root contexts are reported: the check reaches them.
func TestMutexAndContextAllowLists(t *testing.T) {
	root, module := moduleRoot(t)
	for _, a := range mutexAllowList {
		src, err := os.ReadFile(filepath.Join(root, a.file))
		if err != nil {
			t.Errorf("mutexAllowList: %s: %v", a.file, err)
			continue
		}
		vs, err := checkFile(token.NewFileSet(), a.file, src, module, rules{component: true, mutex: true})
		if err != nil {
			t.Fatal(err)
		}
		if !hasRule(vs, "mutex") {
			t.Errorf("mutexAllowList: %s declares no mutex any more; drop its entry", a.file)
		}
	}
	all, _, err := checkTree(root, module, false)
	if err != nil {
		t.Fatal(err)
	}
	if !hasRule(all, "context") {
		t.Error("ignoring the allow-lists, no root context is reported: the check cannot see context.Background")
	}
}

func hasRule(vs []violation, rule string) bool {
	for _, v := range vs {
		if v.Rule == rule {
			return true
		}
	}
	return false
}

// TestCheckSourceFileIO: os file functions are flagged in components, not
// in packages on fileAllowList; os constants and types stay usable.
func TestCheckSourceFileIO(t *testing.T) {
	const module = "github.com/v2a-dr/v2a"
	src := `package c
import "os"
func f() {
	_, _ = os.ReadFile("x")
	_ = os.Rename("a", "b")
	_ = os.O_APPEND | os.O_CREATE
	_ = os.ErrNotExist
	var f *os.File
	_ = f
	_ = os.Getpid()
}
`
	for _, tc := range []struct {
		files bool
		want  []int
	}{{true, []int{4, 5}}, {false, nil}} {
		vs, err := checkSourceRules(token.NewFileSet(), "c.go", []byte(src), module, true, tc.files)
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, v := range vs {
			if v.Rule != "file" {
				t.Errorf("unexpected violation %v", v)
			}
			line, _ := strconv.Atoi(strings.Split(v.Pos, ":")[1])
			got = append(got, line)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("files=%v: lines (-want +got):\n%s", tc.files, diff)
		}
	}
	for dir, want := range map[string]bool{"impl/fsys": true, "impl/blockdev": true, "impl/fsys/fsystest": false, "impl/hrl": false} {
		if got := fileAllowed(dir); got != want {
			t.Errorf("fileAllowed(%q) = %v, want %v", dir, got, want)
		}
	}
}

// TestImportViolations is the negative control of the layer check.
func TestImportViolations(t *testing.T) {
	const m = "github.com/v2a-dr/v2a"
	pkgs := []listedPackage{
		{ImportPath: m + "/impl/ok", Imports: []string{"fmt", m + "/impl/wire", m + "/simple"}, Deps: []string{"fmt", m + "/impl/wire"}},
		{ImportPath: m + "/impl/bad", Imports: []string{m + "/sim/net"}, Deps: []string{m + "/sim/net", m + "/sim/sched"}},
		{ImportPath: m + "/impl/badtest", TestImports: []string{m + "/harness"}, XTestImports: []string{m + "/harness/check"}},
	}
	want := []string{
		m + "/impl/bad depends on " + m + "/sim/sched (through another package)",
		m + "/impl/bad imports " + m + "/sim/net",
		m + "/impl/badtest imports in its external tests " + m + "/harness/check",
		m + "/impl/badtest imports in its tests " + m + "/harness",
	}
	if diff := cmp.Diff(want, importViolations(m, pkgs)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestAllowList pins the allow-list patterns' meaning.
func TestAllowList(t *testing.T) {
	for dir, want := range map[string]bool{
		"impl/runtime":              true,
		"impl/runtime/sub":          false,
		"impl/blob/azblob":          true,
		"impl/blob/azblob/internal": true,
		"impl/blob":                 false,
		"impl/vsphere":              false,
		"impl/vsphere/govmomi":      true,
		"impl/compute/azarm":        true,
		"impl/compute/azarm/fake":   true,
		"impl/compute/computetest":  true,
		"impl/compute/memfabric":    false,
		"impl/compute":              false,
		"impl/agent":                false,
		"impl/runtimex":             false,
		"impl/vspherex/govmomi":     false,
	} {
		if got := allowed(dir); got != want {
			t.Errorf("allowed(%q) = %v, want %v", dir, got, want)
		}
	}
}
