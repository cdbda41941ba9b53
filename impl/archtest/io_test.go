package archtest

// The file-I/O-in-Handle rule (DESIGN.md, "Determinism"; STYLE.md, "do
// not copy: blocking I/O inside Handle"): a component's Handle must not
// block on a disk. Every call that reads, writes or fsyncs a file — the
// fsys port, the change log (hrl), a guest disk (blockdev), a guest's
// Freeze — belongs inside an Op's Run, whose completion comes back as a
// Done event and whose declared disk work (Op.Disk) the simulator charges.
//
// The check type-checks each component package (one with a Handle(ctx
// runtime.Context, ev runtime.Event) method) from source, against the
// export data `go list -export` gives, so calls resolve to the function
// or method they really call. From every Handle method it follows the
// package's own functions and methods (and the function values a body
// refers to), but not into a func literal that is an Op's Run: that runs
// outside Handle. A call to a file-I/O function reached this way is a
// violation, reported with the path from Handle. ioAllowList cuts the walk
// at a few functions, each with its reason.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
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

// ioAllowList names the functions (package directory, then the function
// as "Func" or "(*Type).Method") whose file I/O may run in Handle: the
// walk from Handle does not enter them.
var ioAllowList = []struct {
	dir, fn string
	why     string
}{
	{"impl/agent", "(*Agent).start",
		"Started (and the retry of a failed filter install): the agent opens its change log (hrl.Open) and reads agent.state before it can handle anything else; there is nothing to overlap with yet"},
	{"impl/agent", "(*Filter).Reset",
		"a (re)sync begins: the change log is emptied in the same event that numbers the sync's first record (a rare event, followed by reading every disk whole)"},
	{"impl/agent", "(*dirtyMap).reserve",
		"once every 1,048,576 records the filter raises the sequence reservation in its dirty-block bitmap's header (8 bytes and an fsync), so that record numbers after a machine crash never repeat; it happens in the filter's own path, as a kernel driver's does, whichever record crosses the ceiling (a bookmark or revoke from Handle among them): rare and bounded"},
	{"impl/processsrv", "(*Server).start",
		"Started: the cache disk's epoch and scan are what the server answers from; until they are known it has nothing to say to an agent"},
}

// ioPackages are the packages whose calls count as file I/O: every
// function and method of fsys; of hrl only those that touch the files
// (appending a record to the page cache, as the guest's own writes do, is
// not blocking I/O: Filter.InsertBookmark stays in Handle); of blockdev the
// device's data path.
var ioFuncs = map[string]func(typ, name string) bool{
	"impl/fsys": func(string, string) bool { return true },
	"impl/hrl": func(typ, name string) bool {
		switch typ + "." + name {
		case ".Open", "Log.Sync", "Log.Trim", "Log.Reset", "Log.NewReader", "Log.Close", "Reader.Next", "Reader.Close":
			return true
		}
		return false
	},
	"impl/blockdev": func(_, name string) bool {
		return name == "ReadAt" || name == "WriteAt" || name == "Sync"
	},
}

// recvName is the name of fn's receiver's type ("" for a function).
func recvName(fn *types.Func) string {
	sig, ok := fn.Type().(*types.Signature)
	if !ok || sig.Recv() == nil {
		return ""
	}
	t := sig.Recv().Type()
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	if n, ok := t.(*types.Named); ok {
		return n.Obj().Name()
	}
	return ""
}

// funcName is fn as ioAllowList spells it: "Func" or "(*Type).Method" /
// "(Type).Method".
func funcName(fn *types.Func) string {
	sig := fn.Type().(*types.Signature)
	if sig.Recv() == nil {
		return fn.Name()
	}
	t := sig.Recv().Type()
	star := ""
	if p, ok := t.(*types.Pointer); ok {
		t, star = p.Elem(), "*"
	}
	name := "?"
	if n, ok := t.(*types.Named); ok {
		name = n.Obj().Name()
	}
	return fmt.Sprintf("(%s%s).%s", star, name, fn.Name())
}

// isIO says whether a call of fn is file I/O, and names it. recv is the
// static type of the receiver expression of a method call (nil for a
// function): a method promoted from an embedded interface (fsys.File's
// Write is io.Writer's) is judged by the type it is called on.
func isIO(module string, fn *types.Func, recv types.Type) (string, bool) {
	pkg, typ := fn.Pkg(), recvName(fn)
	if recv != nil {
		if p, ok := recv.(*types.Pointer); ok {
			recv = p.Elem()
		}
		if n, ok := recv.(*types.Named); ok && n.Obj().Pkg() != nil {
			pkg, typ = n.Obj().Pkg(), n.Obj().Name()
		}
	}
	if pkg == nil {
		return "", false
	}
	if fn.Name() == "Freeze" && typ == "Guest" {
		return "Guest.Freeze", true // quiescing a guest's applications waits for them to flush
	}
	rel, ok := strings.CutPrefix(pkg.Path(), module+"/")
	if !ok {
		return "", false
	}
	if match := ioFuncs[rel]; match != nil && match(typ, fn.Name()) {
		if typ != "" {
			return pkg.Name() + "." + typ + "." + fn.Name(), true
		}
		return pkg.Name() + "." + fn.Name(), true
	}
	return "", false
}

// exports maps import paths to export data files, from `go list -export`.
type exports map[string]string

func (x exports) importer(fset *token.FileSet) types.Importer {
	return importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := x[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("archtest: no export data for %s", path)
		}
		return os.Open(f)
	})
}

// listedExport is the part of `go list -export -json` the I/O check reads.
type listedExport struct {
	ImportPath string
	Dir        string
	Export     string
	GoFiles    []string
	Standard   bool
	DepOnly    bool
}

func goListExport(t *testing.T, root string) ([]listedExport, exports) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(goruntime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "list", "-export", "-deps", "-json=ImportPath,Dir,Export,GoFiles,Standard,DepOnly", "./impl/...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export: %v\n%s", err, stderr.String())
	}
	var pkgs []listedExport
	x := exports{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedExport
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		x[p.ImportPath] = p.Export
		pkgs = append(pkgs, p)
	}
	return pkgs, x
}

// ioViolation is a file-I/O call reached from Handle.
type ioViolation struct {
	Pos  string // file:line
	What string // the I/O called
	Path string // Handle → … → the function holding the call
}

// checkHandleIO type-checks one package from files (name → source) and
// returns its file-I/O calls reached from a Handle method, skipping the
// functions allowed (by funcName). ok is false when the package has no
// Handle method: there is nothing to judge.
func checkHandleIO(fset *token.FileSet, path string, files map[string][]byte, x exports, module string, allowed map[string]bool) (out []ioViolation, ok bool, err error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var asts []*ast.File
	for _, n := range names {
		f, err := parser.ParseFile(fset, n, files[n], parser.SkipObjectResolution)
		if err != nil {
			return nil, false, err
		}
		asts = append(asts, f)
	}
	info := &types.Info{
		Types:      map[ast.Expr]types.TypeAndValue{},
		Defs:       map[*ast.Ident]types.Object{},
		Uses:       map[*ast.Ident]types.Object{},
		Selections: map[*ast.SelectorExpr]*types.Selection{},
	}
	conf := types.Config{Importer: x.importer(fset)}
	pkg, err := conf.Check(path, fset, asts, info)
	if err != nil {
		return nil, false, fmt.Errorf("type-check %s: %w", path, err)
	}
	opType := module + "/impl/runtime.Op"
	isOp := func(t types.Type) bool {
		if p, ok := t.(*types.Pointer); ok {
			t = p.Elem()
		}
		n, ok := t.(*types.Named)
		return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path()+"."+n.Obj().Name() == opType
	}
	bodies := map[*types.Func]*ast.BlockStmt{}
	var roots []*types.Func
	for _, f := range asts {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			fn, _ := info.Defs[fd.Name].(*types.Func)
			if fn == nil {
				continue
			}
			bodies[fn] = fd.Body
			if fd.Recv != nil && fn.Name() == "Handle" && fn.Type().(*types.Signature).Params().Len() == 2 {
				roots = append(roots, fn)
			}
		}
	}
	if len(roots) == 0 {
		return nil, false, nil
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].Pos() < roots[j].Pos() })
	callee := func(e ast.Expr) *types.Func {
		switch e := ast.Unparen(e).(type) {
		case *ast.Ident:
			fn, _ := info.Uses[e].(*types.Func)
			return fn
		case *ast.SelectorExpr:
			if sel, ok := info.Selections[e]; ok {
				fn, _ := sel.Obj().(*types.Func)
				return fn
			}
			fn, _ := info.Uses[e.Sel].(*types.Func)
			return fn
		case *ast.IndexExpr: // a generic function instantiated
			return nil
		}
		return nil
	}
	from := map[*types.Func]*types.Func{} // how each reached function was reached
	seen := map[*types.Func]bool{}
	queue := append([]*types.Func(nil), roots...)
	for _, r := range roots {
		seen[r] = true
	}
	chain := func(fn *types.Func) string {
		var parts []string
		for f := fn; f != nil; f = from[f] {
			parts = append(parts, funcName(f))
		}
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
		return strings.Join(parts, " → ")
	}
	for len(queue) > 0 {
		fn := queue[0]
		queue = queue[1:]
		if bodies[fn] == nil {
			continue // an interface method, or declared elsewhere
		}
		ast.Inspect(bodies[fn], func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				if tv, ok := info.Types[n]; ok && isOp(tv.Type) {
					// Walk every field but Run, which runs outside Handle.
					for _, el := range n.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Run" {
								continue
							}
						}
						walkChild(el, fn, info, pkg, callee, allowed, seen, from, &queue, module, fset, chain, &out)
					}
					return false
				}
			case *ast.AssignStmt:
				for i, l := range n.Lhs {
					if sel, ok := l.(*ast.SelectorExpr); ok && sel.Sel.Name == "Run" && i < len(n.Rhs) {
						if tv, ok := info.Types[sel.X]; ok && isOp(tv.Type) {
							if _, lit := n.Rhs[i].(*ast.FuncLit); lit {
								return false // op.Run = func…: runs outside Handle
							}
						}
					}
				}
			}
			visit(n, fn, info, pkg, callee, allowed, seen, from, &queue, module, fset, chain, &out)
			return true
		})
	}
	sort.Slice(out, func(i, j int) bool {
		fi, li := splitPos(out[i].Pos)
		fj, lj := splitPos(out[j].Pos)
		if fi != fj {
			return fi < fj
		}
		return li < lj
	})
	return out, true, nil
}

func splitPos(pos string) (string, int) {
	i := strings.LastIndex(pos, ":")
	n, _ := strconv.Atoi(pos[i+1:])
	return pos[:i], n
}

// walkChild walks an expression of an Op literal other than its Run.
func walkChild(e ast.Expr, fn *types.Func, info *types.Info, pkg *types.Package, callee func(ast.Expr) *types.Func,
	allowed map[string]bool, seen map[*types.Func]bool, from map[*types.Func]*types.Func, queue *[]*types.Func,
	module string, fset *token.FileSet, chain func(*types.Func) string, out *[]ioViolation) {
	ast.Inspect(e, func(n ast.Node) bool {
		visit(n, fn, info, pkg, callee, allowed, seen, from, queue, module, fset, chain, out)
		return true
	})
}

// visit handles one node of a reached body: a call of file I/O is a
// violation; a call of (or reference to) one of the package's own
// functions queues it.
func visit(n ast.Node, fn *types.Func, info *types.Info, pkg *types.Package, callee func(ast.Expr) *types.Func,
	allowed map[string]bool, seen map[*types.Func]bool, from map[*types.Func]*types.Func, queue *[]*types.Func,
	module string, fset *token.FileSet, chain func(*types.Func) string, out *[]ioViolation) {
	var target *types.Func
	switch n := n.(type) {
	case *ast.CallExpr:
		if c := callee(n.Fun); c != nil {
			var recv types.Type
			if sel, ok := ast.Unparen(n.Fun).(*ast.SelectorExpr); ok {
				if s, ok := info.Selections[sel]; ok {
					recv = s.Recv()
				}
			}
			if what, io := isIO(module, c, recv); io {
				p := fset.Position(n.Pos())
				*out = append(*out, ioViolation{Pos: filepath.ToSlash(p.Filename) + ":" + strconv.Itoa(p.Line), What: what, Path: chain(fn)})
			}
		}
		return
	case *ast.Ident, *ast.SelectorExpr:
		target = callee(n.(ast.Expr))
	default:
		return
	}
	if target == nil || target.Pkg() != pkg {
		return
	}
	target = target.Origin()
	if seen[target] || allowed[funcName(target)] {
		return
	}
	seen[target] = true
	from[target] = fn
	*queue = append(*queue, target)
}

// TestNoFileIOInHandle is the rule on the real tree: no component's Handle
// reaches file I/O outside an Op's Run, but for ioAllowList.
func TestNoFileIOInHandle(t *testing.T) {
	root, module := moduleRoot(t)
	pkgs, x := goListExport(t, root)
	checked := 0
	usedAllow := map[string]bool{}
	for _, p := range pkgs {
		rel, ok := strings.CutPrefix(p.ImportPath, module+"/")
		if !ok || p.DepOnly || !strings.HasPrefix(rel, "impl/") || allowed(rel) {
			continue
		}
		files := map[string][]byte{}
		for _, g := range p.GoFiles {
			b, err := os.ReadFile(filepath.Join(p.Dir, g))
			if err != nil {
				t.Fatal(err)
			}
			files[filepath.ToSlash(filepath.Join(rel, g))] = b
		}
		allow := map[string]bool{}
		for _, a := range ioAllowList {
			if a.dir == rel {
				allow[a.fn] = true
			}
		}
		vs, ok, err := checkHandleIO(token.NewFileSet(), p.ImportPath, files, x, module, allow)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		checked++
		for _, v := range vs {
			t.Errorf("%s: [io] %s reached from Handle (%s): run it in an Op", v.Pos, v.What, v.Path)
		}
		// Live negative control: without its allow-list entries, each one
		// excuses something (an entry that excuses nothing must go).
		for fn := range allow {
			without := map[string]bool{}
			for f := range allow {
				if f != fn {
					without[f] = true
				}
			}
			all, _, err := checkHandleIO(token.NewFileSet(), p.ImportPath, files, x, module, without)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range all {
				if strings.Contains(v.Path, fn) {
					usedAllow[rel+" "+fn] = true
				}
			}
		}
	}
	if checked < 3 {
		t.Fatalf("only %d component packages with a Handle method were checked: the check cannot find them", checked)
	}
	for _, a := range ioAllowList {
		if !usedAllow[a.dir+" "+a.fn] {
			t.Errorf("ioAllowList: %s %s excuses no file I/O any more; drop its entry", a.dir, a.fn)
		}
	}
}

// TestCheckHandleIO is the negative control: file I/O reached from Handle
// directly, through a method, or through a callback is reported at the
// call; the same calls inside an Op's Run, in unreached code or behind an
// allowed function are not.
func TestCheckHandleIO(t *testing.T) {
	root, module := moduleRoot(t)
	_, x := goListExport(t, root)
	src := `package c

import (
	"context"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/runtime"
)

type A struct {
	fs fsys.FS
	f  fsys.File
}

func (a *A) Handle(ctx runtime.Context, ev runtime.Event) {
	a.save()
	f := a.f
	ctx.Start(runtime.Op{Name: "ok", Run: func(context.Context) (any, error) { return nil, f.Sync() }})
	var op runtime.Op
	op.Run = func(context.Context) (any, error) { return a.fs.ReadFile("x") }
	_ = op
	then := func() { _ = fsys.SyncDir(a.fs, "d") }
	then()
	a.allowedStart()
	cb := a.viaValue
	cb()
}

func (a *A) save() { _ = a.f.Sync() }

func (a *A) viaValue() { _, _ = a.f.Write(nil) }

func (a *A) allowedStart() { _, _ = a.fs.ReadFile("state") }

func unreached(f fsys.File) { _ = f.Sync() }
`
	type found struct {
		Line int
		What string
	}
	for _, tc := range []struct {
		name  string
		allow map[string]bool
		want  []found
	}{
		{"with an allow-list", map[string]bool{"(*A).allowedStart": true},
			[]found{{22, "fsys.SyncDir"}, {29, "fsys.File.Sync"}, {31, "fsys.File.Write"}}},
		{"without", nil,
			[]found{{22, "fsys.SyncDir"}, {29, "fsys.File.Sync"}, {31, "fsys.File.Write"}, {33, "fsys.FS.ReadFile"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs, ok, err := checkHandleIO(token.NewFileSet(), "example.com/c", map[string][]byte{"c.go": []byte(src)}, x, module, tc.allow)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Fatal("no Handle method found")
			}
			var got []found
			for _, v := range vs {
				line, _ := strconv.Atoi(strings.Split(v.Pos, ":")[1])
				got = append(got, found{line, v.What})
				if !strings.HasPrefix(v.Path, "(*A).Handle") {
					t.Errorf("violation %+v: path does not start at Handle", v)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("violations (-want +got):\n%s\nall: %+v", diff, vs)
			}
		})
	}
	// A package with no Handle method has nothing to judge.
	_, ok, err := checkHandleIO(token.NewFileSet(), "example.com/d", map[string][]byte{"d.go": []byte("package d\nfunc f() {}\n")}, x, module, nil)
	if err != nil || ok {
		t.Errorf("package without Handle: ok=%v err=%v, want not judged", ok, err)
	}
}
