// Package mutants runs v2a's mutant suite: curated patches that each plant
// one bug in the implementation, and the scenario and check that must catch
// it. A mutant is killed only when the named check fails in the named
// scenario; a mutant that survives, or whose patch no longer applies or
// builds (it rotted), fails the suite. This is how the project shows that
// its checks are not vacuous: each checker's negative control at the level
// of a whole run.
//
// A mutant file (harness/testdata/mutants/NAME.patch) is a header, then a
// `git diff` that applies with `git apply` at the repository root:
//
//	# mutant: NAME
//	# bug: one line saying what the planted bug is
//	# scenario: SCENARIO-FILE-BASENAME (scenarios/SCENARIO.scn)
//	# killed-by: CHECK-NAME
//	diff --git a/impl/... b/impl/...
//
// Each mutant runs in a copy of the tree (the files git tracks, as they are
// in the working tree, and a link to Azurite's node_modules), built with
// the shared Go build cache, so a mutant costs one incremental build and
// one scenario run.
package mutants

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Mutant is one planted bug.
type Mutant struct {
	Name     string // # mutant:
	Bug      string // # bug:
	Scenario string // # scenario: scenarios/SCENARIO.scn without .scn (NAME or regressions/NAME), or swarm:FROM-TO (a swarm run)
	KilledBy string // # killed-by: the check that must fail
	File     string // the .patch file
	Patch    []byte // the whole file; git apply skips the header
}

// headerKeys are the header's keys, all required, each once.
var headerKeys = []string{"mutant", "bug", "scenario", "killed-by"}

// Parse reads a mutant file: `# key: value` lines, then a git diff.
func Parse(file string, data []byte) (Mutant, error) {
	m := Mutant{File: file, Patch: data}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	diff := false
	for sc.Scan() {
		line++
		l := sc.Text()
		if strings.HasPrefix(l, "diff --git ") {
			diff = true
			break
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		if !strings.HasPrefix(l, "#") {
			return Mutant{}, fmt.Errorf("mutants: %s:%d: want a `# key: value` header line or `diff --git`, got %q", file, line, l)
		}
		k, v, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(l, "#")), ":")
		if !ok {
			continue // a comment
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var dst *string
		switch k {
		case "mutant":
			dst = &m.Name
		case "bug":
			dst = &m.Bug
		case "scenario":
			dst = &m.Scenario
		case "killed-by":
			dst = &m.KilledBy
		default:
			continue // a comment with a colon in it
		}
		if seen[k] {
			return Mutant{}, fmt.Errorf("mutants: %s:%d: %s: given twice", file, line, k)
		}
		seen[k] = true
		*dst = v
	}
	if err := sc.Err(); err != nil {
		return Mutant{}, fmt.Errorf("mutants: %s: %w", file, err)
	}
	for _, k := range headerKeys {
		if !seen[k] {
			return Mutant{}, fmt.Errorf("mutants: %s: missing `# %s:` header line", file, k)
		}
	}
	// A kept swarm failure is named by its directory: regressions/NAME.
	scenario, _ := strings.CutPrefix(m.Scenario, "regressions/")
	for _, f := range []struct{ k, v string }{{"mutant", m.Name}, {"scenario", scenario}, {"killed-by", m.KilledBy}} {
		if f.v == "" || strings.ContainsAny(f.v, " \t/") {
			return Mutant{}, fmt.Errorf("mutants: %s: `# %s:` must be one word, got %q", file, f.k, f.v)
		}
	}
	if want := strings.TrimSuffix(filepath.Base(file), ".patch"); m.Name != want {
		return Mutant{}, fmt.Errorf("mutants: %s: `# mutant: %s` does not match the file name (want %s)", file, m.Name, want)
	}
	if !diff {
		return Mutant{}, fmt.Errorf("mutants: %s: no `diff --git` after the header", file)
	}
	m.Scenario = strings.TrimSuffix(m.Scenario, ".scn")
	return m, nil
}

// Load reads every *.patch in dir whose mutant name matches re (nil: all),
// in name order.
func Load(dir string, re *regexp.Regexp) ([]Mutant, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.patch"))
	if err != nil {
		return nil, fmt.Errorf("mutants: %w", err)
	}
	sort.Strings(files)
	var out []Mutant
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("mutants: %w", err)
		}
		m, err := Parse(f, data)
		if err != nil {
			return nil, err
		}
		if re == nil || re.MatchString(m.Name) {
			out = append(out, m)
		}
	}
	return out, nil
}

// Outcome is how a mutant fared.
type Outcome string

// The outcomes. Only Killed and KilledByCrash count as killed.
const (
	Killed        Outcome = "killed"
	KilledByCrash Outcome = "killed by crash" // an unexpected error: in the script, or the binary died
	WrongCheck    Outcome = "wrong check"     // other checks failed, not the one the header names
	Survived      Outcome = "SURVIVED"
	Rotted        Outcome = "ROTTED" // the patch no longer applies, or the tree does not build with it
)

// Dead reports whether the outcome counts as killed.
func (o Outcome) Dead() bool { return o == Killed || o == KilledByCrash }

// Failure is one failed check as `v2a run --failures` writes it.
type Failure struct {
	Check    string `json:"check"`
	Subject  string `json:"subject"`
	Verdict  string `json:"verdict"`
	Evidence string `json:"evidence,omitempty"`
}

// Result is one mutant's run.
type Result struct {
	Mutant  Mutant
	Outcome Outcome
	Detail  string // the check and subject that killed it, or what ran
	Took    time.Duration
}

// Line is the one line the suite prints for a mutant.
func (r Result) Line() string {
	m := r.Mutant
	secs := fmt.Sprintf("%.0f s", r.Took.Seconds())
	switch r.Outcome {
	case Killed:
		return fmt.Sprintf("mutant %s: killed by %s in %s (%s)", m.Name, m.KilledBy, m.Scenario, secs)
	case KilledByCrash:
		return fmt.Sprintf("mutant %s: killed by crash in %s, not by %s (%s): %s", m.Name, m.Scenario, m.KilledBy, secs, r.Detail)
	case WrongCheck:
		return fmt.Sprintf("mutant %s: NOT KILLED by %s in %s, though other checks failed (%s): %s — fix the header or the check", m.Name, m.KilledBy, m.Scenario, secs, r.Detail)
	case Survived:
		return fmt.Sprintf("mutant %s: SURVIVED %s (%s): %s", m.Name, m.Scenario, secs, r.Detail)
	default:
		return fmt.Sprintf("mutant %s: ROTTED (%s): %s", m.Name, secs, r.Detail)
	}
}

// Judge decides a mutant's outcome from its scenario run: the exit code,
// the failures file's content (nil with haveFailures false when the binary
// never wrote it: it died), and the tail of its output for the report.
//
// Killed needs a failed check with the header's name. A failed "script"
// entry (a command printed an unexpected error) or a run that died before
// its closing lines is a crash: killed, but reported apart, because a
// crash says less than a check about what was wrong.
func Judge(m Mutant, exitCode int, failures []Failure, haveFailures bool, outTail string) (Outcome, string) {
	if !haveFailures {
		return KilledByCrash, fmt.Sprintf("the run died (exit %d) before its closing lines: %s", exitCode, lastLine(outTail))
	}
	var others, script []string
	for _, f := range failures {
		switch f.Check {
		case m.KilledBy:
			return Killed, f.Subject
		case "script":
			script = append(script, firstLine(f.Evidence))
		default:
			others = append(others, f.Check+" "+f.Subject)
		}
	}
	switch {
	case len(others) > 0:
		return WrongCheck, strings.Join(uniq(others), ", ")
	case len(script) > 0:
		return KilledByCrash, script[0]
	case exitCode != 0:
		return KilledByCrash, fmt.Sprintf("exit %d with no failed check: %s", exitCode, lastLine(outTail))
	}
	if from, to, ok := SwarmRange(m.Scenario); ok {
		return Survived, fmt.Sprintf("swarm seeds %s..%s ran to the end, every check passed", from, to)
	}
	return Survived, fmt.Sprintf("scenarios/%s.scn ran to the end, every check passed", m.Scenario)
}

// SwarmRange reads a `# scenario: swarm:FROM-TO` header: the mutant is
// judged by `v2a swarm --from FROM --to TO` instead of one scenario.
func SwarmRange(scenario string) (from, to string, ok bool) {
	rest, ok := strings.CutPrefix(scenario, "swarm:")
	if !ok {
		return "", "", false
	}
	from, to, ok = strings.Cut(rest, "-")
	var a, b uint64
	if !ok || from == "" || to == "" {
		return "", "", false
	}
	if _, err := fmt.Sscan(from, &a); err != nil {
		return "", "", false
	}
	if _, err := fmt.Sscan(to, &b); err != nil || b < a {
		return "", "", false
	}
	return from, to, true
}

// ParseFailures reads a failures file's JSON lines.
func ParseFailures(data []byte) ([]Failure, error) {
	var out []Failure
	for i, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var f Failure
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			return nil, fmt.Errorf("mutants: failures line %d: %w", i+1, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// Suite runs mutants against a tree.
type Suite struct {
	// Root is the repository to copy (its `git ls-files`).
	Root string
	// Links are paths under Root, untracked, that each copy links to
	// (sim/azurite/node_modules).
	Links []string
	// Jobs is how many mutants run at once (at least 1).
	Jobs int
	// Timeout bounds one mutant's build and run (0: 15 minutes).
	Timeout time.Duration
	// Go is the go command ("" : "go").
	Go string
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// Run runs each mutant and returns the results in the mutants' order.
func (s *Suite) Run(ctx context.Context, ms []Mutant) []Result {
	files, err := trackedFiles(ctx, s.Root)
	results := make([]Result, len(ms))
	if err != nil {
		for i, m := range ms {
			results[i] = Result{Mutant: m, Outcome: Rotted, Detail: err.Error()}
		}
		return results
	}
	jobs := max(s.Jobs, 1)
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = s.one(ctx, m, files)
		}()
	}
	wg.Wait()
	return results
}

func (s *Suite) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", args...)
	}
}

// one copies the tree, applies, builds and runs one mutant. The copy is
// removed whatever happens.
func (s *Suite) one(ctx context.Context, m Mutant, files []string) (res Result) {
	start := time.Now()
	res.Mutant = m
	defer func() { res.Took = time.Since(start) }()
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "v2a-mutant-"+m.Name+"-")
	if err != nil {
		res.Outcome, res.Detail = Rotted, err.Error()
		return res
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "tree")
	if err := copyTree(s.Root, tree, files, s.Links); err != nil {
		res.Outcome, res.Detail = Rotted, "copy the tree: "+err.Error()
		return res
	}
	patch := filepath.Join(tmp, m.Name+".patch")
	if err := os.WriteFile(patch, m.Patch, 0o644); err != nil {
		res.Outcome, res.Detail = Rotted, err.Error()
		return res
	}
	if out, err := command(ctx, tree, nil, "git", "apply", "--whitespace=nowarn", patch); err != nil {
		res.Outcome, res.Detail = Rotted, "the patch no longer applies (the code it mutates changed: re-make it): "+firstLine(out)
		return res
	}
	s.logf("mutant %s: applied, building", m.Name)
	bin := filepath.Join(tmp, "v2a")
	goCmd := s.Go
	if goCmd == "" {
		goCmd = "go"
	}
	if out, err := command(ctx, tree, nil, goCmd, "build", "-o", bin, "./cmd/v2a"); err != nil {
		res.Outcome, res.Detail = Rotted, "the tree does not build with the patch: "+firstLine(out)
		return res
	}
	fails := filepath.Join(tmp, "failures.jsonl")
	args := []string{"run", filepath.Join("scenarios", m.Scenario+".scn"), "--trace", "none", "--quiet", "--progress", "none", "--failures", fails}
	if from, to, ok := SwarmRange(m.Scenario); ok {
		// A swarm run: the seeds' scripts are the scenario, and the swarm
		// re-runs each failing one from its file.
		args = []string{"swarm", "--from", from, "--to", to, "--jobs", "1", "--progress-every", "0", "--out", filepath.Join(tmp, "swarm-out"), "--failures", fails}
		s.logf("mutant %s: built, running a swarm of seeds %s..%s", m.Name, from, to)
	} else {
		s.logf("mutant %s: built, running scenarios/%s.scn", m.Name, m.Scenario)
	}
	out, err := command(ctx, tree, nil, bin, args...)
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		res.Outcome, res.Detail = Rotted, "run: "+err.Error()
		return res
	}
	if ctx.Err() != nil {
		res.Outcome, res.Detail = KilledByCrash, fmt.Sprintf("no verdict within %s (hung?)", timeout)
		return res
	}
	data, ferr := os.ReadFile(fails)
	var fs []Failure
	if ferr == nil {
		if fs, err = ParseFailures(data); err != nil {
			res.Outcome, res.Detail = KilledByCrash, err.Error()
			return res
		}
	}
	res.Outcome, res.Detail = Judge(m, code, fs, ferr == nil, out)
	return res
}

func trackedFiles(ctx context.Context, root string) ([]string, error) {
	out, err := command(ctx, root, nil, "git", "ls-files", "-z")
	if err != nil {
		return nil, fmt.Errorf("mutants: git ls-files in %s: %v: %s", root, err, firstLine(out))
	}
	var files []string
	for _, f := range strings.Split(out, "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	return files, nil
}

// copyTree copies files (relative to root) into dst, as they are in the
// working tree (a tracked file deleted there is skipped), and links each
// of links.
func copyTree(root, dst string, files, links []string) error {
	for _, f := range files {
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		to := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if st.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			continue
		}
		if !st.Mode().IsRegular() {
			continue // a submodule or the like: nothing to build from
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, data, st.Mode().Perm()); err != nil {
			return err
		}
	}
	for _, l := range links {
		src := filepath.Join(root, l)
		if _, err := os.Stat(src); err != nil {
			continue // not installed: a scenario needing it fails, and says so
		}
		to := filepath.Join(dst, l)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(src, to); err != nil {
			return err
		}
	}
	return nil
}

// command runs name in dir and returns its combined output.
func command(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), env...)
	// On a timeout or Ctrl-C, ask first (v2a then closes its world and
	// removes its directory), and kill only if that does not end it.
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 10 * time.Second
	var b bytes.Buffer
	c.Stdout, c.Stderr = &b, &b
	err := c.Run()
	return b.String(), err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func uniq(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
