package report

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"time"
)

//go:embed report.css
var css string

//go:embed report.html.tmpl
var page string

var tmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"dur":    Dur,
	"at":     At,
	"short":  short,
	"sample": sampleText,
	"sub":    func(a, b time.Duration) time.Duration { return a - b },
}).Parse(page))

// view is what the template is given: the model and its drawings.
type view struct {
	*Run
	CSS      template.CSS
	WorldSVG template.HTML
	Machines []machineView
	Groups   []groupView
	// RepJobs are the configuration server's jobs (enable, resync,
	// reprotect, ...), RecJobs the recovery jobs (failovers, cleanups,
	// failbacks) as Gantt charts.
	RepJobs, RecJobs       []Job
	RepGantt, RecGantt     template.HTML
	CheckSummary           []checkCount
	FailedChecks, AllCheck []Check
}

type machineView struct {
	Machine
	Live int
	SVG  template.HTML
}

type groupView struct {
	Group
	SVG       template.HTML
	RoundsSVG template.HTML // the last rounds' phases (roundsSVG)
	Gantt     int           // how many rounds RoundsSVG draws
}

type checkCount struct {
	Check      string
	OK, Failed int
}

// Render writes the run as one self-contained HTML page. The same Run gives
// the same bytes.
func Render(w io.Writer, r *Run) error {
	v := view{Run: r, CSS: template.CSS(css + PhaseCSS), WorldSVG: template.HTML(worldSVG(r.World))}
	for _, m := range r.Machines {
		live := 0
		for _, p := range m.Points {
			if p.Gone == "" {
				live++
			}
		}
		v.Machines = append(v.Machines, machineView{Machine: m, Live: live, SVG: template.HTML(rpoSVG(m, r.Elapsed))})
	}
	for _, g := range r.Groups {
		v.Groups = append(v.Groups, groupView{Group: g, SVG: template.HTML(groupSVG(g, r.Elapsed)),
			RoundsSVG: template.HTML(roundsSVG(g)), Gantt: len(GanttShown(g))})
	}
	for _, j := range r.Jobs {
		if isRecovery(j) {
			v.RecJobs = append(v.RecJobs, j)
		} else {
			v.RepJobs = append(v.RepJobs, j)
		}
	}
	v.RepGantt = template.HTML(ganttSVG(v.RepJobs, r.Elapsed))
	v.RecGantt = template.HTML(ganttSVG(v.RecJobs, r.Elapsed))
	idx := map[string]int{}
	for _, c := range r.Checks.Results {
		i, ok := idx[c.Check]
		if !ok {
			i = len(v.CheckSummary)
			idx[c.Check] = i
			v.CheckSummary = append(v.CheckSummary, checkCount{Check: c.Check})
		}
		if c.Verdict == "ok" {
			v.CheckSummary[i].OK++
		} else {
			v.CheckSummary[i].Failed++
			v.FailedChecks = append(v.FailedChecks, c)
		}
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, v); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// isRecovery: a job of the recovery orchestrator (its ids are "job-N").
func isRecovery(j Job) bool { return len(j.ID) > 4 && j.ID[:4] == "job-" }
