package archtest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The log style (impl/runtime's package doc, "Logging"): a message is
// "<package>: what happened", and its slog keys are lower-case words or
// snake_case. This file checks the keys of every log call in impl/ whose
// key is a constant string, and the prefix of every constant message.

// logKey is the shape of a log key.
var logKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// logFunc is a function impl/ code logs through: the message is argument
// msg, and key/value pairs start at argument kv.
type logFunc struct {
	dir     string // "" for any package, else the package's directory (impl/x)
	name    string // the function's or method's name
	msg, kv int
	// prefixed: the helper puts "<package>: " before the message itself.
	prefixed bool
}

// logFuncs are the log calls the check knows. A function of impl/ that
// takes `...any` and passes it on to one of these is a log helper and
// must be listed too (TestLogHelpersListed).
var logFuncs = []logFunc{
	{name: "Debug", msg: 0, kv: 1}, {name: "Info", msg: 0, kv: 1}, {name: "Warn", msg: 0, kv: 1}, {name: "Error", msg: 0, kv: 1}, // *slog.Logger
	{name: "Log", msg: 2, kv: 3},                                          // (*slog.Logger).Log(ctx, level, msg, args...)
	{name: "LogAt", msg: 2, kv: 3},                                        // runtime.LogAt(logger, level, msg, args...)
	{dir: "impl/azuresvc", name: "note", msg: 1, kv: 2},                   // applier.note(level, msg, args...)
	{dir: "impl/azuresvc", name: "logAction", msg: 1, kv: 2},              // the group tracker's log action
	{dir: "impl/processsrv", name: "fail", msg: 1, kv: 3, prefixed: true}, // Server.fail(ctx, what, err, attrs...)
}

// calleeName is the name a call calls: f(...) or x.f(...).
func calleeName(call *ast.CallExpr) string {
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		return fn.Name
	case *ast.SelectorExpr:
		return fn.Sel.Name
	}
	return ""
}

func findLogFunc(dir, name string) (logFunc, bool) {
	for _, f := range logFuncs {
		if f.name == name && (f.dir == "" || f.dir == dir) {
			return f, true
		}
	}
	return logFunc{}, false
}

// logStyleViolations checks the log calls of one file of package dir
// (impl/x) named pkg, and says how many keys it checked.
func logStyleViolations(fset *token.FileSet, filename, dir string, src []byte) ([]violation, int, error) {
	f, err := parser.ParseFile(fset, filename, src, 0)
	if err != nil {
		return nil, 0, err
	}
	var out []violation
	keys := 0
	report := func(n ast.Node, rule, what string) {
		out = append(out, violation{Pos: fset.Position(n.Pos()).String(), Rule: rule, What: what})
	}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		lf, ok := findLogFunc(dir, calleeName(call))
		if !ok || len(call.Args) <= lf.msg {
			return true
		}
		// Only a call whose message is a "pkg: ..." string, or is passed
		// on, is a log call (err.Error() and fs.DirEntry.Info() are not).
		msg, isLit := constString(call.Args[lf.msg])
		if isLit && !lf.prefixed {
			if !strings.HasPrefix(msg, f.Name.Name+": ") {
				report(call.Args[lf.msg], "log-message", fmt.Sprintf("log message %q does not start with %q", msg, f.Name.Name+": "))
			}
		}
		for i := lf.kv; i < len(call.Args); i += 2 {
			if call.Ellipsis.IsValid() && i == len(call.Args)-1 {
				break // args... passed on: checked where they are made
			}
			keyArg := call.Args[i]
			if attr, ok := slogAttr(keyArg); ok {
				keyArg, i = attr, i-1 // slog.String(key, v) is one argument
			}
			key, ok := constString(keyArg)
			if !ok {
				if isLit {
					report(keyArg, "log-key", "log key is not a constant string")
				}
				continue
			}
			keys++
			if !logKey.MatchString(key) {
				report(keyArg, "log-key", fmt.Sprintf("log key %q is not lower-case words or snake_case (%s)", key, logKey))
			}
		}
		return true
	})
	return out, keys, nil
}

// slogAttr is the key argument of e when e is a slog.Attr made by package
// slog (slog.String("key", v), slog.Int, slog.Any, ...).
func slogAttr(e ast.Expr) (ast.Expr, bool) {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) == 0 {
		return nil, false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return nil, false
	}
	if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "slog" {
		return nil, false
	}
	return call.Args[0], true
}

// constString is e's value when e is a string literal.
func constString(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// logHelpers lists the functions of one file that take `...any` and pass
// it on to a known log call, as dir.name.
func logHelpers(fset *token.FileSet, filename, dir string, src []byte) ([]string, error) {
	f, err := parser.ParseFile(fset, filename, src, 0)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil || fd.Type.Params == nil || len(fd.Type.Params.List) == 0 {
			continue
		}
		last := fd.Type.Params.List[len(fd.Type.Params.List)-1]
		ell, ok := last.Type.(*ast.Ellipsis)
		if !ok || len(last.Names) != 1 {
			continue
		}
		if id, ok := ell.Elt.(*ast.Ident); !ok || id.Name != "any" {
			continue
		}
		variadic := last.Names[0].Name
		passes := false
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !call.Ellipsis.IsValid() {
				return true
			}
			if _, ok := findLogFunc(dir, calleeName(call)); !ok {
				return true
			}
			ast.Inspect(call.Args[len(call.Args)-1], func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok && id.Name == variadic {
					passes = true
				}
				return true
			})
			return true
		})
		if passes {
			out = append(out, dir+"."+fd.Name.Name)
		}
	}
	return out, nil
}

// implFiles calls fn with every non-test .go file under root/impl, its
// slash path relative to root and its package directory.
func implFiles(t *testing.T, root string, fn func(rel, dir string, src []byte)) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(root, "impl"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "testdata" || strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fn(filepath.ToSlash(rel), filepath.ToSlash(filepath.Dir(rel)), src)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLogStyle checks every log call in impl/, and that the four
// components' log keys were found at all (a check with nothing to judge
// fails).
func TestLogStyle(t *testing.T) {
	root, _ := moduleRoot(t)
	fset := token.NewFileSet()
	perDir := map[string]int{}
	implFiles(t, root, func(rel, dir string, src []byte) {
		vs, n, err := logStyleViolations(fset, rel, dir, src)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return
		}
		perDir[dir] += n
		for _, v := range vs {
			t.Error(v)
		}
	})
	for _, dir := range []string{"impl/agent", "impl/configsrv", "impl/processsrv", "impl/azuresvc"} {
		if perDir[dir] < 10 {
			t.Errorf("%s: only %d log keys found; the check is not seeing its log calls", dir, perDir[dir])
		}
	}
}

// TestLogHelpersListed fails when impl/ code logs through a helper of its
// own that logFuncs does not list (its keys would go unchecked).
func TestLogHelpersListed(t *testing.T) {
	root, _ := moduleRoot(t)
	fset := token.NewFileSet()
	listed := map[string]bool{}
	for _, f := range logFuncs {
		if f.dir != "" {
			listed[f.dir+"."+f.name] = true
		}
	}
	found := 0
	implFiles(t, root, func(rel, dir string, src []byte) {
		hs, err := logHelpers(fset, rel, dir, src)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return
		}
		for _, h := range hs {
			found++
			if !listed[h] && !strings.HasSuffix(h, ".LogAt") {
				t.Errorf("%s: %s logs its ...any arguments: list it in logFuncs so that its keys are checked", rel, h)
			}
		}
	})
	if found == 0 {
		t.Error("no log helper found at all (runtime.LogAt is one): the helper search is broken")
	}
}

// TestLogStyleCheck is the negative control: source with badly styled
// keys and messages is reported, well-styled source is not.
func TestLogStyleCheck(t *testing.T) {
	tests := []struct {
		name, dir, src string
		want           []string // rules, in order
		keys           int
	}{
		{"good", "impl/x", `package x
func f(ctx C, a *A) {
	ctx.Log().Info("x: started", "poll_every", 1, "machine", "m")
	runtime.LogAt(ctx.Log(), lvl, "x: done", "seq", 2)
	_ = err.Error()
	_, _ = e.Info()
}`, nil, 3},
		{"camelCase key", "impl/x", `package x
func f(ctx C) { ctx.Log().Warn("x: dropped", "revokedTag", 1) }`, []string{"log-key"}, 1},
		{"upper-case key via LogAt", "impl/x", `package x
func f(ctx C) { runtime.LogAt(ctx.Log(), lvl, "x: dropped", "Seq", 1) }`, []string{"log-key"}, 1},
		{"key that is not a constant", "impl/x", `package x
func f(ctx C, k string) { ctx.Log().Error("x: failed", k, 1) }`, []string{"log-key"}, 0},
		{"message without its package", "impl/x", `package x
func f(ctx C) { ctx.Log().Info("cache full", "seq", 1) }`, []string{"log-message"}, 1},
		{"a package's own helper", "impl/azuresvc", `package azuresvc
func f(a *applier) { a.note(lvl, "azuresvc: x", "appliedLogSeq", 1) }`, []string{"log-key"}, 1},
		{"the helper of another package is not known", "impl/x", `package x
func f(a *applier) { a.note(lvl, "x: x", "appliedLogSeq", 1) }`, nil, 0},
		{"slog attrs", "impl/x", `package x
func f(ctx C) { ctx.Log().Info("x: y", slog.String("machine", m), "seq", 1, slog.Int("chunkBytes", 2)) }`, []string{"log-key"}, 3},
		{"processsrv's fail prefixes its message itself", "impl/processsrv", `package processsrv
func f(s *Server) { s.fail(ctx, "cannot delete", err, "machine", m, "Seq", 1) }`, []string{"log-key"}, 2},
		{"passed-on args are checked where made", "impl/processsrv", `package processsrv
func f(s *Server, attrs []any) { s.fail(ctx, "processsrv: x", err, attrs...) }`, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs, keys, err := logStyleViolations(token.NewFileSet(), "f.go", tc.dir, []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range vs {
				got = append(got, v.Rule)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") || keys != tc.keys {
				t.Errorf("got rules %v and %d keys, want %v and %d: %v", got, keys, tc.want, tc.keys, vs)
			}
		})
	}
}

// TestLogHelpersFound is the negative control of TestLogHelpersListed.
func TestLogHelpersFound(t *testing.T) {
	src := `package x
func logf(l *L, msg string, args ...any) { l.Info(msg, args...) }
func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
func wrap(args ...any) { runtime.LogAt(l, lvl, "x: y", append([]any{"machine", m}, args...)...) }
`
	got, err := logHelpers(token.NewFileSet(), "f.go", "impl/x", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "impl/x.logf,impl/x.wrap" {
		t.Errorf("log helpers = %v, want [impl/x.logf impl/x.wrap]", got)
	}
}
